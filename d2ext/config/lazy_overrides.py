"""Command-line overrides of lazy configs that cannot add keys by mistake.

Detectron2's LazyConfig.apply_overrides merges each "key=value" with OmegaConf.update, which
creates the key when it does not exist: a typo (train.max_itr=5) is silently added and ignored.
Here an override must name an existing key, except a new argument of a LazyCall node (a dict
with _target_) that its target accepts: that passes a new keyword to the callable, which
Detectron2's configs rely on (e.g. model.backbone.bottom_up.freeze_at=2 where unset).
"""

import difflib
import inspect
from typing import List

from detectron2.config import LazyConfig
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig, OmegaConf

from d2ext.errors import OverrideKeyError

_MISSING = object()


def _override_keys(overrides: List[str]) -> List[str]:
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
    except ImportError:  # as LazyConfig.apply_overrides without hydra
        return [o.split("=")[0] for o in overrides]
    return [o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)]


def _all_keys(node, prefix=""):
    if isinstance(node, DictConfig):
        for k in node.keys():
            yield from _all_keys(node._get_node(k), f"{prefix}{k}.")
        if prefix:
            yield prefix[:-1]
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _all_keys(node._get_node(i), f"{prefix}{i}.")
        yield prefix[:-1]
    else:
        yield prefix[:-1]


def _target_accepts(parent, name: str) -> bool:
    target = parent.get("_target_")
    if isinstance(target, str):
        try:
            target = locate(target)
        except Exception:
            return False
    # A class's __init__ often takes **kwargs only to forward them to its base's: follow the
    # MRO until an __init__ without **kwargs ends the chain.
    inits = (
        [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
        if inspect.isclass(target)
        else [target]
    )
    for init in inits:
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return False
        if name in params:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return True


def check_override_keys(cfg, overrides: List[str]):
    """Raises OverrideKeyError (a KeyError) naming each override key that does not exist in cfg (with the closest
    existing key) and is not a new argument its LazyCall node's target accepts."""
    for key in _override_keys(overrides):
        if OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is not _MISSING:
            continue
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if (
            isinstance(parent, DictConfig)
            and "_target_" in parent
            and _target_accepts(parent, name)
        ):
            continue
        close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise OverrideKeyError(
            f"Config override {key!r} names a key that does not exist in the lazy config{hint} "
            f"(new keys are only accepted as arguments of a LazyCall node's target)"
        )


def apply_overrides(cfg, overrides: List[str]):
    """LazyConfig.apply_overrides after :func:`check_override_keys`."""
    check_override_keys(cfg, overrides)
    return LazyConfig.apply_overrides(cfg, overrides)
