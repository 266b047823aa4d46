"""The one way d2ext reads a config: :func:`load_config`, used by every tool, the model zoo and
the comparison.

- ``.yaml``: d2ext's :func:`get_cfg` (Detectron2's keys and every d2ext key) merged with the file
  through safe, bounded yaml (d2ext/config/safe_yaml.py), then ``KEY VALUE`` overrides.
- ``.py``: a lazy config (``LazyConfig.load``, which runs the Python file: give only files you
  would run), then ``key=value`` overrides that must name existing keys
  (d2ext/config/lazy_overrides.py).

Lazy configs saved as yaml by Detectron2 (``config.yaml`` of a lazy run) are refused:
``LazyConfig.load`` reads them with ``yaml.unsafe_load``.
"""

from typing import Sequence

from detectron2.config import LazyConfig
from detectron2.utils.file_io import PathManager

from d2ext.errors import ConfigError

from .lazy_overrides import apply_overrides
from .tta import lazy_tta_defaults


def is_lazy_config(path: str) -> bool:
    return path.endswith(".py")


def load_config(path: str, opts: Sequence[str] = (), *, allow_unsafe_yaml: bool = False):
    """
    The config at ``path`` with command-line overrides ``opts`` applied: a d2ext CfgNode for
    yaml (not frozen), an omegaconf DictConfig for lazy (.py) configs.

    Args:
        allow_unsafe_yaml: let a yaml file's python tags run (yaml.unsafe_load); only for files
            you trust. Never read from the environment.
    Raises:
        ConfigError: the file does not exist, is not a config, or an override is bad
            (UnsafeYamlError for a python tag, OverrideKeyError for an unknown lazy key).
    """
    from . import get_cfg  # the package's, with every d2ext key

    if not PathManager.isfile(path):
        raise ConfigError(f"Config file {path!r} does not exist")
    if is_lazy_config(path):
        cfg = LazyConfig.load(path)
        if "test_aug" not in cfg:  # TEST.AUG's twin, off (d2ext.config.tta)
            cfg.test_aug = lazy_tta_defaults()
        return apply_overrides(cfg, list(opts))
    if not path.endswith((".yaml", ".yml")):
        raise ConfigError(f"Config file {path!r} is neither a yaml (.yaml) nor a lazy (.py) config")
    cfg = get_cfg()
    cfg.merge_from_file(path, allow_unsafe=allow_unsafe_yaml)
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"Config override of {path}: {str(e).strip(chr(39))}") from None
    return cfg
