"""Yaml configs read with safe yaml and bounded work.

Detectron2's CfgNode.merge_from_file defaults to allow_unsafe=True: a file that safe yaml refuses
(a ``!!python/object/apply:os.system [...]`` tag) is then re-read with yaml.unsafe_load, which runs
the code it names. d2ext's :class:`D2extCfgNode` (what ``d2ext.config.get_cfg()`` returns) reads
yaml through :func:`load_yaml_with_base` here instead:

- safe yaml unless the caller passes ``allow_unsafe=True`` (the tools' ``--allow-unsafe-yaml``);
- a file is read whole (at most MAX_FILE_BYTES) and composed (yaml's node graph: no object is
  built, no tag resolved) before anything is constructed, and refused when its aliases expand to
  more than MAX_NODES nodes or refer to themselves: nested aliases ("billion laughs") grow
  exponentially with the file's length, and Detectron2 copies every expanded node;
- ``_BASE_`` files: at most MAX_FILES per config, nested at most MAX_DEPTH, a cycle refused.
"""

import io
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict

import yaml
from detectron2.config import CfgNode
from detectron2.utils.file_io import PathManager

from d2ext.errors import ConfigError, D2extError, UnsafeYamlError

logger = logging.getLogger(__name__)

BASE_KEY = "_BASE_"
MAX_FILE_BYTES = 4 << 20
# Detectron2's whole default config has ~500 nodes; a hand-written config a few hundred.
MAX_NODES = 100_000
MAX_FILES = 64
MAX_DEPTH = 16


@dataclass
class _Budget:
    """What one merge_from_file may still read (shared by a config and its _BASE_ files)."""

    files: int = MAX_FILES
    nodes: int = MAX_NODES


def _expanded_size(root: yaml.Node, filename: str) -> int:
    """Nodes of root's tree with every alias expanded, counted without expanding (each distinct
    node once); raises on an alias that refers to itself."""
    sizes: Dict[int, int] = {}
    on_path = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigError(
                f"Config file {filename}: a yaml alias refers to itself (a recursive structure)"
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node):
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def _read(filename: str) -> str:
    try:
        with PathManager.open(filename, "r") as f:
            text = f.read(MAX_FILE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:  # a missing _BASE_ file, a binary file
        raise ConfigError(
            f"Config file {filename} cannot be read: {type(e).__name__}: {e}"
        ) from None
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"Config file {filename} is larger than {MAX_FILE_BYTES >> 20} MiB")
    return text


def _parse(filename: str, allow_unsafe: bool, budget: _Budget) -> Any:
    text = _read(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes only: nothing built, nothing run
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {filename} is not valid yaml: {e}") from None
    except RecursionError:  # yaml's composer recurses once per nesting level
        raise ConfigError(f"Config file {filename} is nested too deeply") from None
    if root is None:
        return {}
    budget.nodes -= _expanded_size(root, filename)
    if budget.nodes < 0:
        raise ConfigError(
            f"Config file {filename} (with its _BASE_ files) expands to more than {MAX_NODES} yaml "
            "nodes (nested aliases?); d2ext refuses it before building it"
        )
    try:
        return yaml.safe_load(io.StringIO(text))
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        if "could not determine a constructor" not in str(e.problem):  # e.g. an unhashable key
            raise ConfigError(
                f"Config file {filename} is not valid yaml ({e.problem}, line {line})"
            ) from None
        if not allow_unsafe:
            raise UnsafeYamlError(
                f"Config file {filename} has a yaml tag that safe yaml does not load ({e.problem}, "
                f"line {line}); python tags (!!python/...) can run code, so d2ext refuses them. If "
                "you trust the file, pass --allow-unsafe-yaml (library: allow_unsafe=True)."
            ) from None
    except (
        yaml.YAMLError,
        ValueError,
        TypeError,
        OverflowError,
        RecursionError,
    ) as e:  # e.g. a bad !!timestamp
        raise ConfigError(
            f"Config file {filename} is not valid yaml: {type(e).__name__}: {e}"
        ) from None
    logger.warning(f"Loading config {filename} with yaml.unsafe_load: the file can run code.")
    return yaml.unsafe_load(io.StringIO(text))


def _merge_a_into_b(a: Dict[str, Any], b: Dict[str, Any], filename: str):
    for k, v in a.items():
        if isinstance(v, dict) and k in b:
            if not isinstance(b[k], dict):
                raise ConfigError(
                    f"Config file {filename}: cannot inherit key {k!r} from its _BASE_"
                )
            _merge_a_into_b(v, b[k], filename)
        else:
            b[k] = v


def _base_path(base: Any, filename: str) -> str:
    if not isinstance(base, str):
        raise ConfigError(
            f"Config file {filename}: {BASE_KEY} must be a file name or a list of them, got {base!r}"
        )
    if base.startswith("~"):
        base = os.path.expanduser(base)
    if not base.startswith(("/", "https://", "http://")):
        base = os.path.join(os.path.dirname(filename), base)  # relative to the config file
    return base


def load_yaml_with_base(
    filename: str, allow_unsafe: bool = False, _budget=None, _chain=()
) -> Dict[str, Any]:
    """The yaml file as a dict, its _BASE_ files merged in (fvcore's semantics), read with the
    bounds of this module's docstring."""
    budget = _budget or _Budget()
    budget.files -= 1
    if budget.files < 0 or len(_chain) >= MAX_DEPTH:
        raise ConfigError(
            f"Config file {filename}: more than {MAX_FILES} _BASE_ files, or nested deeper than {MAX_DEPTH}"
        )
    here = os.path.abspath(filename) if "://" not in filename else filename
    if here in _chain:
        raise ConfigError(
            f"Config file {filename} is its own _BASE_ (through {' -> '.join(_chain)})"
        )
    cfg = _parse(filename, allow_unsafe, budget)
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"Config file {filename} holds a {type(cfg).__name__}, not a mapping of keys"
        )
    if BASE_KEY not in cfg:
        return cfg
    bases = cfg.pop(BASE_KEY)
    merged: Dict[str, Any] = {}
    for base in bases if isinstance(bases, list) else [bases]:
        loaded = load_yaml_with_base(
            _base_path(base, filename), allow_unsafe, budget, _chain + (here,)
        )
        _merge_a_into_b(loaded, merged, filename)
    _merge_a_into_b(cfg, merged, filename)
    return merged


class D2extCfgNode(CfgNode):
    """Detectron2's CfgNode whose yaml loading is d2ext's: safe unless ``allow_unsafe=True`` is
    passed (Detectron2's default is True), bounded (see the module's docstring), and a missing or
    bad file is a ConfigError naming it. So Detectron2's idiom ``cfg = d2ext.config.get_cfg();
    cfg.merge_from_file(f)`` is safe with an untrusted ``f``."""

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False):
        return load_yaml_with_base(filename, allow_unsafe)

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        if not PathManager.isfile(cfg_filename):
            raise ConfigError(f"Config file {cfg_filename!r} does not exist")
        try:
            super().merge_from_file(cfg_filename, allow_unsafe=allow_unsafe)
        except D2extError:
            raise
        except (
            KeyError,
            ValueError,
            TypeError,
            AttributeError,
            AssertionError,
            RecursionError,
        ) as e:
            # yacs: an unknown key, a type mismatch; Detectron2's version upgrade of odd values
            raise ConfigError(
                f"Config file {cfg_filename}: {type(e).__name__}: {str(e).strip(chr(39))}"
            ) from None


def merge_from_file(cfg, filename: str, allow_unsafe: bool = False):
    """Merges a yaml file into any CfgNode (a plain Detectron2 one too) with d2ext's loading.
    Returns cfg."""
    if isinstance(cfg, D2extCfgNode):
        cfg.merge_from_file(filename, allow_unsafe=allow_unsafe)
        return cfg
    node = D2extCfgNode(cfg)  # a copy with d2ext's loading; merged back into cfg
    node.merge_from_file(filename, allow_unsafe=allow_unsafe)
    cfg.merge_from_other_cfg(CfgNode(node))
    return cfg
