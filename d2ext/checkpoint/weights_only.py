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
scheduler state are read on resume) is refused. Which globals torch does not allow: for a zip
checkpoint, torch.serialization.get_unsafe_globals_in_checkpoint; for a legacy (pre-zip) file
(at most ``MAX_LEGACY_GLOBALS``, 256, distinct ones), each global the dry run found is loaded
alone through torch.load(weights_only=True). Neither reads torch's error messages.
"""

import contextlib
import io
import logging
import os
import pickle
from typing import Dict, List

import torch

from d2ext.errors import WeightsFileError

from .pickle_scan import scan_pickle
from .pth_checks import checked_zip_data_pkl, is_zip, scan_legacy

logger = logging.getLogger(__name__)

# How many distinct globals a legacy file may name (each one is looked up by a load of its own).
MAX_LEGACY_GLOBALS = 256


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
    """torch.load with a placeholder for every global torch does not allow (by default or in the
    user's allowlist), each pickle torch will read scanned first; returns what it loaded and the
    placeholders by global name. `data_pkl`: a zip checkpoint's, None for a legacy file."""
    if data_pkl is not None:
        unsafe = _unsafe_globals_in_zip(fp)
        extra = {n: _placeholder(n) for n in unsafe}
        scan_pickle(data_pkl, identity_hashed=frozenset(extra))
    else:
        named = scan_legacy(fp, size, name)
        if len(named) > MAX_LEGACY_GLOBALS:
            raise WeightsFileError(
                f"a legacy (pre-zip) checkpoint naming {len(named)} globals; at most "
                f"{MAX_LEGACY_GLOBALS} are read"
            )
        extra = {f"{m}.{n}": _placeholder(f"{m}.{n}") for m, n in named if not _torch_allows(m, n)}
    fp.seek(0)
    with torch.serialization.safe_globals([(cls, n) for n, cls in extra.items()]):
        return torch.load(fp, map_location="cpu", weights_only=True), extra


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
    """torch's error as a WeightsFileError (marked `torch_failed`). torch.load re-raises its
    weights-only unpickler's error with advice to load with weights_only=False (which runs the
    file): the unpickler's own error, which it chains as the context, is the one shown, and of any
    error only its first sentence (torch's other errors end with that advice too)."""
    if isinstance(error, pickle.UnpicklingError) and isinstance(
        error.__context__, pickle.UnpicklingError
    ):
        error = error.__context__
    text = " ".join(str(error).split()).split(". ")[0]
    failure = WeightsFileError(
        f"{type(error).__name__}: {text if len(text) <= 500 else text[:500] + '...'}"
    )
    failure.torch_failed = True
    return failure


# ---------------------------------------------------------------------------------------------
# Which globals become placeholders.


def _unsafe_globals_in_zip(f) -> List[str]:
    """Every global a zip checkpoint names that torch does not allow, by default or in the user's
    allowlist (torch.serialization.get_unsafe_globals_in_checkpoint: one pass, no loading)."""
    try:
        f.seek(0)
        return torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except Exception:  # not a torch.save zip (e.g. TorchScript): torch.load says why
        return []


def _torch_allows(module: str, qualname: str) -> bool:
    """Whether torch's weights-only loading builds this global, by default or in the user's
    allowlist, for legacy files (get_unsafe_globals_in_checkpoint reads zip files only): a
    legacy file that holds nothing but the global, loaded. Such a load only looks the name up."""
    if "\n" in module or "\n" in qualname:
        return False
    data = _LEGACY_HEADER + b"\x80\x02c" + f"{module}\n{qualname}\n".encode() + b"." + _NO_STORAGES
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return False
    return True


_LEGACY_HEADER = b"".join(
    pickle.dumps(x, protocol=2)
    for x in (
        torch.serialization.MAGIC_NUMBER,
        torch.serialization.PROTOCOL_VERSION,
        {"protocol_version": torch.serialization.PROTOCOL_VERSION, "little_endian": True},
    )
)
_NO_STORAGES = pickle.dumps([], protocol=2)


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
