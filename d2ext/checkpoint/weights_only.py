"""torch.load(weights_only=True) for checkpoints whose metadata holds objects torch's weights-only
unpickler does not build: numpy scalars and arrays, mmengine's MessageHub buffers and the like.
Every checkpoint mmdetection 3 (mmengine) saves while training has them, and so may older mmcv
``meta`` dicts; torch refuses the whole file, and weights_only=False would run whatever the file
names. Here every such global, numpy's included (numpy's real rebuilders trust the file's dtype
flags and can be made to read pointers from it), becomes an inert placeholder: it stores its
arguments and state and runs nothing. Only an mmdetection file (weights in ``state_dict``, no
``model``) may hold them, outside a ``state_dict`` of plain tensors by name; any other file (a
Detectron2 checkpoint's optimizer and scheduler state are read on resume) is refused.
"""
import logging
import pickle
import re
from typing import Dict

import torch

logger = logging.getLogger(__name__)

_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
# How many distinct globals one file may add before the loader gives up (each one is a re-read).
MAX_GLOBALS = 32


class Unloaded:
    """An object of a type weights-only loading does not build, kept as its pickled arguments and
    state. `global_name` is the type (or function) the file named."""

    global_name = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<{self.global_name}, not loaded>"


def _placeholder(name: str) -> type:
    return type("Unloaded", (Unloaded,), {"global_name": name})


def _placeholders_in(root) -> set:
    """The global names of the placeholders in root (dicts and their keys, lists, tuples, sets;
    every object visited once, however often the file references it)."""
    found, seen, stack = set(), set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Unloaded):
            found.add(obj.global_name)
        elif isinstance(obj, dict):
            stack.extend(dict.keys(obj))
            stack.extend(dict.values(obj))
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
    return found


def _check_plain_weights(state, extra: Dict[str, type]):
    """An mmdetection state_dict loaded beside placeholders: names to plain tensors, nothing else
    (no placeholder, not even as a class or an attribute of a tensor)."""
    ok = isinstance(state, dict) and all(
        isinstance(k, str) and type(v) in (torch.Tensor, torch.nn.Parameter) and not v.__dict__
        for k, v in dict.items(state)
    )
    if not ok:
        where = sorted(_placeholders_in(state)) or sorted(extra)
        raise pickle.UnpicklingError(
            f"its weights (state_dict) are not only tensors by name; the file holds objects of {', '.join(where)}, "
            "which weights-only loading does not build"
        )


def _names_in_file(f: str):
    """Every global a zip-format checkpoint names (one pass, no loading); none for legacy files,
    whose names the load loop finds one at a time."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except Exception:
        return []


def _global_name(error: Exception):
    found = _UNSUPPORTED.search(str(error))
    if not found:
        return None
    # torch's message drops the "builtins." of a builtin (e.g. getattr in numpy pickles).
    return found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"


def _user_allowed_names() -> set:
    """Names the user allowlisted with torch.serialization.add_safe_globals: never replaced."""
    names = set()
    for entry in torch.serialization.get_safe_globals():
        obj, name = entry if isinstance(entry, tuple) else (entry, None)
        names.add(name or f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
    return names


def load_weights_only(f: str):
    """torch.load(f, weights_only=True) on the CPU; if the file names globals torch does not
    allow, loaded again with those as placeholders (logged by name). Raises pickle's
    UnpicklingError when the file cannot be read that way or a placeholder stands where d2ext
    reads (see the module's docstring)."""
    extra: Dict[str, type] = {}
    while True:
        try:
            with torch.serialization.safe_globals([(cls, name) for name, cls in extra.items()]):
                loaded = torch.load(f, map_location="cpu", weights_only=True)
            break
        except pickle.UnpicklingError as e:
            name = _global_name(e)
            if name is None or name in extra or len(extra) >= MAX_GLOBALS:
                raise
            user = _user_allowed_names()
            for n in [name] + ([] if extra else _names_in_file(f)):
                if n not in user:
                    extra.setdefault(n, _placeholder(n))
    if extra:
        mmdet = isinstance(loaded, dict) and "state_dict" in loaded and "model" not in loaded
        if not mmdet:
            raise pickle.UnpicklingError(
                f"its checkpoint holds objects of {', '.join(sorted(extra))}, which weights-only loading does not build"
            )
        _check_plain_weights(loaded["state_dict"], extra)
        logger.info("%s: loaded without the objects of %s (metadata; weights-only loading does not build them)",
                    f, ", ".join(sorted(extra)))
    return loaded
