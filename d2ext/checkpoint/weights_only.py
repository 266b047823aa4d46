"""torch.load(weights_only=True) for .pth checkpoints, with the checks it lacks, and for checkpoints
whose metadata holds objects torch's weights-only unpickler does not build.

``load_weights_only`` ends every file it refuses or cannot read with a ``WeightsFileError``
(d2ext/errors.py: an ``InvalidCheckpointError`` and a ``pickle.UnpicklingError``) that says why;
only an ``OSError`` opening the file is passed on as it is. ``refused_by_d2ext`` tells d2ext's own
refusals from torch's (or zipfile's) errors on the file. Before torch reads anything:

- The file's container is checked (d2ext/checkpoint/pth_checks.py, whose docstring lists exactly
  what it refuses): a zip checkpoint must be a plain zip (its end records close the file, one
  central directory where they say, unique names, records stored or deflated, not encrypted),
  whose records expand to at most ``MAX_EXPANSION`` (4) times the file's size plus
  ``EXPANSION_SLACK`` (1 MiB) in all, by their recorded sizes and by what decompressing deflated
  ones yields; a legacy (pre-zip) file may claim storages of at most that many bytes.
- The pickles torch will unpickle (data.pkl, or a legacy file's five) go through ``scan_pickle``'s
  dry run (d2ext/checkpoint/pickle_scan.py): tuples nested more than 32 deep (torch hashed them
  until SIGSEGV) or whose hash would visit more items than max(2**20, the pickle's opcodes)
  (tuples sharing tuples: exponentially many), MARKs open more than 200 deep, and dict keys, set
  items and storage keys other than str, bytes, None, bool, ints below 2**61 - 1 in magnitude,
  globals and placeholders (others could share one hash and make loading quadratic) are refused.
  Objects of globals you allowlist yourself with torch.serialization.add_safe_globals are built as
  torch builds them: those classes are trusted, as in torch.

Globals torch does not allow (as in every checkpoint mmdetection 3 / mmengine saves while training:
numpy scalars and arrays in ``meta``, MessageHub buffers) become inert placeholders (``Unloaded``):
each stores its arguments and state and runs nothing; so do numpy's, whose real rebuilders trust
the file's dtype flags and can be made to read pointers from it (unless you allowlist them). Only an
mmdetection file (weights in ``state_dict``, no ``model``) may hold placeholders, outside a
``state_dict`` of plain tensors by name; any other file (a Detectron2 checkpoint's optimizer and
scheduler state are read on resume) is refused. Zip checkpoints name their globals up front
(torch.serialization.get_unsafe_globals_in_checkpoint); for legacy files they are read from
torch's error, one at a time, up to ``MAX_GLOBALS`` (32).
"""

import contextlib
import io
import logging
import os
import pickle
import re
from typing import Dict

import torch

from d2ext.errors import WeightsFileError

from .pickle_scan import scan_pickle
from .pth_checks import checked_zip_data_pkl, is_zip, scan_legacy

logger = logging.getLogger(__name__)

# How many distinct globals one file may add before the loader gives up (each one is a re-read).
MAX_GLOBALS = 32
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_weights_only(f):
    """torch.load(f, weights_only=True) on the CPU (f: a path or a seekable binary file) after the
    checks of the module's docstring; globals torch does not allow become placeholders (logged by
    name). Raises WeightsFileError for a file it refuses or cannot read."""
    if isinstance(f, (str, os.PathLike)):
        name = str(f)
    else:
        name = str(getattr(f, "name", "the checkpoint"))
    with _opened(f) as fp:
        try:
            return _load(fp, name)
        except WeightsFileError:
            raise
        except Exception as e:  # torch.load's errors on bad bytes vary (UnpicklingError, ...)
            raise _torch_failure(e) from None


def refused_by_d2ext(error: BaseException) -> bool:
    """Whether an error of load_weights_only is one of d2ext's own refusals, raised before torch
    read the file, rather than torch's (or zipfile's) error on it."""
    return isinstance(error, WeightsFileError) and not getattr(error, "torch_failed", False)


@contextlib.contextmanager
def _opened(f):
    if isinstance(f, (str, bytes, os.PathLike)):
        with open(f, "rb") as fp:
            yield fp
    else:
        yield f


def _load(fp, name: str):
    size = fp.seek(0, io.SEEK_END)
    data_pkl = checked_zip_data_pkl(fp, size, name) if is_zip(fp) else None
    loaded, extra = _load_with_placeholders(fp, size, name, data_pkl)
    if extra:
        _check_placeholders_only_in_metadata(loaded, extra, name)
    return loaded


def _load_with_placeholders(fp, size: int, name: str, data_pkl):
    """torch.load with a placeholder for every global torch does not allow (and the user did not
    allowlist), each pickle torch will read scanned first; returns what it loaded and the
    placeholders by global name. `data_pkl`: a zip checkpoint's, None for a legacy file."""
    user = _user_allowed_names()
    extra: Dict[str, type] = {}
    for n in _names_in_file(fp) if data_pkl is not None else ():
        if n not in user:
            extra[n] = _placeholder(n)
    while True:
        identity_hashed = frozenset(extra)
        if data_pkl is not None:
            scan_pickle(data_pkl, identity_hashed=identity_hashed)
        else:
            scan_legacy(fp, size, name, identity_hashed)
        fp.seek(0)
        try:
            with torch.serialization.safe_globals([(cls, n) for n, cls in extra.items()]):
                return torch.load(fp, map_location="cpu", weights_only=True), extra
        except pickle.UnpicklingError as e:
            # A legacy file's next global, or a file d2ext cannot load.
            n = _global_name(e)
            if n is None or n in extra or n in user or len(extra) >= MAX_GLOBALS:
                raise
            extra[n] = _placeholder(n)


def _check_placeholders_only_in_metadata(loaded, extra: Dict[str, type], name: str):
    """Only an mmdetection file may hold placeholders, outside its state_dict of plain tensors."""
    mmdet = isinstance(loaded, dict) and "state_dict" in loaded and "model" not in loaded
    if not mmdet:
        raise WeightsFileError(
            f"its checkpoint holds objects of {', '.join(sorted(extra))}, which weights-only "
            "loading does not build"
        )
    _check_plain_weights(loaded["state_dict"], extra)
    logger.info(
        "%s: loaded without the objects of %s (metadata; weights-only loading does not build them)",
        name,
        ", ".join(sorted(extra)),
    )


def _torch_failure(error: Exception) -> WeightsFileError:
    """torch's error as a WeightsFileError (marked `torch_failed`), without its advice to load
    with weights_only=False (which runs the file)."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(Check the documentation|$)", text, re.S)
    text = " ".join((found.group(1) if found else text).split())
    failure = WeightsFileError(
        f"{type(error).__name__}: {text if len(text) <= 500 else text[:500] + '...'}"
    )
    failure.torch_failed = True
    return failure


# ---------------------------------------------------------------------------------------------
# Which globals become placeholders.


def _names_in_file(f):
    """Every global a zip-format checkpoint names that torch does not allow (one pass, no
    loading); none for legacy files, whose names the load loop finds one at a time."""
    try:
        if hasattr(f, "seek"):
            f.seek(0)
        return torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except Exception:
        return []


def _user_allowed_names() -> set:
    """Names the user allowlisted with torch.serialization.add_safe_globals: never replaced."""
    names = set()
    for entry in torch.serialization.get_safe_globals():
        obj, name = entry if isinstance(entry, tuple) else (entry, None)
        names.add(name or f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
    return names


def _global_name(error: Exception):
    found = _UNSUPPORTED.search(str(error))
    if not found:
        return None
    # torch's message drops the "builtins." of a builtin (e.g. getattr in numpy pickles).
    return found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"


# ---------------------------------------------------------------------------------------------
# The placeholders.


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


def _check_plain_weights(state, extra: Dict[str, type]):
    """An mmdetection state_dict loaded beside placeholders: names to plain tensors, nothing else
    (no placeholder, not even as a class or an attribute of a tensor)."""
    ok = isinstance(state, dict) and all(
        isinstance(k, str) and type(v) in (torch.Tensor, torch.nn.Parameter) and not v.__dict__
        for k, v in dict.items(state)
    )
    if not ok:
        where = sorted(_placeholders_in(state)) or sorted(extra)
        raise WeightsFileError(
            "its weights (state_dict) are not only tensors by name; the file holds objects of "
            f"{', '.join(where)}, "
            "which weights-only loading does not build"
        )


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
