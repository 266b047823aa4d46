"""Yaml configs loaded with yaml.safe_load.

Detectron2's CfgNode.merge_from_file defaults to allow_unsafe=True: a file that safe yaml refuses
(a `!!python/object/apply:os.system [...]` tag) is then re-read with yaml.unsafe_load, which runs
the code it names. d2ext loads yaml configs through :func:`merge_from_file`, which refuses such
files unless the user opts in with the environment variable D2EXT_ALLOW_UNSAFE_YAML=1
(tools/train_net.py --allow-unsafe-yaml sets it).
"""
import os

import yaml

ALLOW_UNSAFE_YAML_ENV = "D2EXT_ALLOW_UNSAFE_YAML"


class UnsafeYamlError(ValueError):
    """A config file needs yaml.unsafe_load (a python tag), which d2ext refuses by default."""


def unsafe_yaml_allowed() -> bool:
    return os.environ.get(ALLOW_UNSAFE_YAML_ENV, "") == "1"


def merge_from_file(cfg, filename: str):
    """cfg.merge_from_file(filename) with safe yaml for the file and its _BASE_ files, unless
    D2EXT_ALLOW_UNSAFE_YAML=1. Returns cfg."""
    try:
        cfg.merge_from_file(filename, allow_unsafe=unsafe_yaml_allowed())
    except yaml.constructor.ConstructorError as e:
        # The mark names the file with the tag, which may be one of filename's _BASE_ files.
        where = e.problem_mark.name if e.problem_mark is not None else filename
        raise UnsafeYamlError(
            f"Config file {where} has a yaml tag that safe yaml does not load ({e.problem}, "
            f"line {e.problem_mark.line + 1 if e.problem_mark else '?'}); python tags (!!python/...) "
            f"can run code, so d2ext refuses them. If you trust the file, set "
            f"{ALLOW_UNSAFE_YAML_ENV}=1 (tools/train_net.py --allow-unsafe-yaml)."
        ) from e
    return cfg
