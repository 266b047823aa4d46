"""
Renaming a foreign state dict onto a d2ext model: ordered rename rules, then checks that every
source key was mapped or dropped for a stated reason, and that every target key of the converted
modules received a tensor of the right shape. The tables themselves live with their source
format (d2ext/checkpoint/mmdet.py, torchvision.py).
"""

import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from d2ext.errors import ConversionError

logger = logging.getLogger(__name__)

# A rule's target: a re.sub replacement template or function, or None to drop the key.
Target = Union[str, Callable[[re.Match], str], None]


@dataclass
class Rule:
    """Source keys fully matching ``pattern`` are renamed to ``target`` (``re.sub`` syntax), or
    dropped with ``reason`` when ``target`` is None."""

    pattern: str
    target: Target
    reason: str = ""


@dataclass
class Table:
    """One source model -> one d2ext model: the rules of each source prefix, and the target
    prefixes whose every key must be produced (the converted modules)."""

    name: str
    rules: List[Tuple[str, str, List[Rule]]]  # (source prefix, target prefix, rules)
    converted: List[str]  # target prefixes (e.g. "backbone.", "head.") checked for completeness
    # Per-level scalars kept as separate modules by the source ("….scales.3.scale") and as one
    # (L,) parameter by d2ext: target name of each level's value -> stacked target name.
    stacked: Dict[str, str] = field(default_factory=dict)


def convert(
    table: Table,
    source: Dict[str, torch.Tensor],
    target: Dict[str, torch.Tensor],
    source_name: str = "the checkpoint",
) -> Dict[str, torch.Tensor]:
    """
    Renames ``source`` by ``table`` for a model whose state dict is ``target``.

    Raises:
        ConversionError: a target key of a converted module got no value (names it), a value
            has the wrong shape, or two source keys map to one target key.
    Returns:
        the renamed state dict. Source keys no rule maps, and those dropped on purpose, are
        logged by name.
    """
    out: Dict[str, torch.Tensor] = {}
    origin: Dict[str, str] = {}
    dropped: Dict[str, List[str]] = {}
    unmapped: List[str] = []
    for key, value in source.items():
        new_key = _rename(table, key)
        if new_key is None:
            unmapped.append(key)
            continue
        if isinstance(new_key, tuple):  # dropped on purpose
            dropped.setdefault(new_key[1], []).append(key)
            continue
        if new_key in out:
            raise ConversionError(
                f"{source_name}: {origin[new_key]!r} and {key!r} both map to {new_key!r} ({table.name})"
            )
        out[new_key] = value
        origin[new_key] = key
    out = _stack_levels(table, out, origin)

    missing = sorted(
        k for k in target if any(k.startswith(p) for p in table.converted) and k not in out
    )
    if missing:
        raise ConversionError(
            f"{source_name} ({table.name}) has no value for {len(missing)} key(s) of the model: "
            f"{missing[:20]}{' ...' if len(missing) > 20 else ''}. The config does not build the "
            f"model the checkpoint was trained as (e.g. MODEL.<METHOD>.TOWER_CONV_BIAS must be "
            f"False for mmdetection's conv+GN towers)."
        )
    for key, value in out.items():
        if key in target and tuple(target[key].shape) != tuple(value.shape):
            raise ConversionError(
                f"{source_name}: {origin.get(key, key)!r} has shape {tuple(value.shape)} but the "
                f"model's {key!r} has {tuple(target[key].shape)} ({table.name})"
            )
    extra = sorted(k for k in out if k not in target)
    for reason, keys in dropped.items():
        logger.info(f"{source_name}: not loaded ({reason}): {len(keys)} key(s), e.g. {keys[:3]}")
    if unmapped:
        logger.warning(
            f"{source_name}: {len(unmapped)} key(s) no {table.name} rule maps: {unmapped}"
        )
    if extra:
        logger.warning(
            f"{source_name}: {len(extra)} converted key(s) the model does not have: "
            f"{[origin.get(k, k) for k in extra]} -> {extra}"
        )
    return out


def _rename(table: Table, key: str):
    """New name, ("drop", reason), or None when no rule matches."""
    for src_prefix, dst_prefix, rules in table.rules:
        if not key.startswith(src_prefix):
            continue
        rest = key[len(src_prefix) :]
        for rule in rules:
            match = re.fullmatch(rule.pattern, rest)
            if match is None:
                continue
            if rule.target is None:
                return ("drop", rule.reason)
            new = rule.target(match) if callable(rule.target) else match.expand(rule.target)
            return dst_prefix + new
    return None


def _stack_levels(table: Table, out, origin):
    """Per-level scalars "<name>.<level>" -> one (L,) tensor "<stacked name>"."""
    for prefix, stacked_name in table.stacked.items():
        levels, level_origin = {}, {}
        for key in list(out):
            if key.startswith(prefix + "."):
                level = int(key[len(prefix) + 1 :])
                source_key = origin.pop(key, key)
                if level in levels:  # "scales.1.scale" and "scales.01.scale"
                    raise ConversionError(
                        f"{level_origin[level]!r} and {source_key!r} both map to level {level} of "
                        f"{stacked_name!r} ({table.name})"
                    )
                levels[level] = out.pop(key).reshape(())
                level_origin[level] = source_key
                origin.setdefault(stacked_name, source_key)
        if levels:
            if sorted(levels) != list(range(len(levels))):
                raise ConversionError(
                    f"{prefix}: levels {sorted(levels)} are not 0..{len(levels) - 1}"
                )
            out[stacked_name] = torch.stack([levels[i] for i in range(len(levels))])
    return out


def find_prefix(target: Sequence[str], suffix: str) -> Optional[str]:
    """The prefix of the one target key ending in ``suffix`` (None if there is none)."""
    found = sorted({k[: -len(suffix)] for k in target if k.endswith(suffix)})
    if len(found) > 1:
        raise ConversionError(f"the model has several modules ending in {suffix!r}: {found}")
    return found[0] if found else None
