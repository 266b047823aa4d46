"""torch.load(weights_only=True) for checkpoints whose metadata holds objects torch's weights-only
unpickler does not build: numpy scalars and arrays, mmengine's MessageHub buffers and the like.
Every checkpoint mmdetection 3 (mmengine) saves while training has them, and so may older mmcv
``meta`` dicts; torch refuses the whole file, and weights_only=False would run whatever the file
names. Here each such global becomes an inert placeholder (it stores its arguments and state and
runs nothing), while numpy's scalar / array / dtype rebuilders, which only rebuild data, are
allowed. The weights themselves must still be tensors (or numpy arrays): a placeholder among
them is an error naming its global.
"""
import logging
import pickle
import re
from typing import Dict, List

import numpy as np
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


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _numpy_global(name: str):
    """numpy's data rebuilders under the names numpy 1 and 2 pickle them with, else None."""
    found = re.fullmatch(r"numpy\.(?:_?core)\.multiarray\.(scalar|_reconstruct)", name)
    if found:
        return getattr(_numpy_multiarray(), found.group(1))
    if name in ("numpy.ndarray", "numpy.dtype"):
        return getattr(np, name.split(".")[1])
    if name.startswith("numpy.dtypes."):
        return getattr(getattr(np, "dtypes", None), name.split(".")[-1], None)
    return None


def _numpy_dtype_classes() -> List[type]:
    """numpy >= 1.25 builds each dtype as an instance of its own class (numpy.dtypes.Float64DType,
    ...), which the unpickler must be allowed to set the state of."""
    dtypes = getattr(np, "dtypes", None)
    return [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []


def _placeholders_in(obj, found: set, depth: int = 0) -> set:
    if isinstance(obj, Unloaded):
        found.add(obj.global_name)
    elif isinstance(obj, dict) and depth < 8:
        for v in obj.values():
            _placeholders_in(v, found, depth + 1)
    elif isinstance(obj, (list, tuple)) and depth < 8:
        for v in obj:
            _placeholders_in(v, found, depth + 1)
    return found


def weights_part(loaded):
    """Where a checkpoint keeps its weights: mmdetection's state_dict, Detectron2's model, or the
    whole dict."""
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if key in loaded:
                return loaded[key]
    return loaded


def load_weights_only(f: str):
    """torch.load(f, weights_only=True) on the CPU; if the file names globals torch does not
    allow, loaded again with those as placeholders (logged by name). Raises pickle's
    UnpicklingError when the file cannot be read that way or its weights are not tensors."""
    extra: Dict[str, object] = {}
    while True:
        allowed: List = [(obj, name) for name, obj in extra.items()]
        if extra:
            allowed += _numpy_dtype_classes()
        try:
            with torch.serialization.safe_globals(allowed):
                loaded = torch.load(f, map_location="cpu", weights_only=True)
            break
        except pickle.UnpicklingError as e:
            found = _UNSUPPORTED.search(str(e))
            # torch's message drops the "builtins." of a builtin (e.g. getattr in numpy pickles).
            name = found and (found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}")
            if not found or name in extra or len(extra) >= MAX_GLOBALS:
                raise
            extra[name] = _numpy_global(name) or _placeholder(name)
    unloaded = sorted(n for n, obj in extra.items() if isinstance(obj, type) and issubclass(obj, Unloaded))
    if unloaded:
        in_weights = sorted(_placeholders_in(weights_part(loaded), set()))
        if in_weights:
            raise pickle.UnpicklingError(
                f"its weights hold objects of {', '.join(in_weights)}, which weights-only loading does not build"
            )
        logger.info("%s: loaded without the objects of %s (not weights; weights-only loading does not build them)",
                    f, ", ".join(unloaded))
    return loaded

