"""torch.load(weights_only=True) for .pth checkpoints, with the checks it lacks, and for checkpoints
whose metadata holds objects torch's weights-only unpickler does not build.

``load_weights_only`` ends every file it refuses or cannot read with a ``WeightsFileError`` (a
``pickle.UnpicklingError``, from d2ext/checkpoint/safe_pickle.py) that says why; only an
``OSError`` opening the file is passed on as it is. Before torch reads anything:

- A zip checkpoint (torch.save's format) must be a plain zip: its end records close the file (no
  comment), its central directory lies where they say, no two records share a name (torch looks
  names up case-insensitively), every record is stored or deflated, not encrypted. Then Python's
  zipfile, which these checks read, and torch's reader see the same records.
- Its records may expand to at most ``MAX_EXPANSION`` (4) times the file's size plus
  ``EXPANSION_SLACK`` (1 MiB) in all, by their recorded sizes and, for deflated ones, by what
  decompressing them actually yields. torch.save stores records uncompressed (at most the file's
  size); a 256 KB file with a deflated record would otherwise load a 256 MiB tensor. A legacy
  (pre-zip) file may likewise claim storages of at most that many bytes.
- The pickles torch will unpickle (data.pkl, or a legacy file's five) go through ``scan_pickle``'s
  dry run (d2ext/checkpoint/safe_pickle.py): tuples nested more than 32 deep (torch hashed them
  until SIGSEGV) or whose hash would visit more items than max(2**20, the pickle's opcodes)
  (tuples sharing tuples: exponentially many), and
  dict keys, set items and storage keys other than str, bytes, None, bool, ints below 2**61 - 1 in
  magnitude, globals and placeholders (others could share one hash and make loading quadratic)
  are refused. Objects of globals you allowlist yourself with torch.serialization.add_safe_globals
  are built as torch builds them: those classes are trusted, as in torch.

Globals torch does not allow (as in every checkpoint mmdetection 3 / mmengine saves while training:
numpy scalars and arrays in ``meta``, MessageHub buffers) become inert placeholders (``Unloaded``):
each stores its arguments and state and runs nothing; so do numpy's, whose real rebuilders trust
the file's dtype flags and can be made to read pointers from it (unless you allowlist them). Only an
mmdetection file (weights in ``state_dict``, no ``model``) may hold placeholders, outside a
``state_dict`` of plain tensors by name; any other file (a Detectron2 checkpoint's optimizer and
scheduler state are read on resume) is refused. Zip checkpoints name their globals up front
(torch.serialization.get_unsafe_globals_in_checkpoint); for legacy files they are read from
torch's error, one at a time, up to ``MAX_GLOBALS``.
"""

import contextlib
import io
import logging
import os
import pickle
import re
import struct
import warnings
import zipfile
from typing import Dict, FrozenSet

import torch

from .safe_pickle import WeightsFileError, scan_pickle

logger = logging.getLogger(__name__)

_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
# How many distinct globals one file may add before the loader gives up (each one is a re-read).
MAX_GLOBALS = 32
# A checkpoint's records (tensor data) may expand to at most
# MAX_EXPANSION x its size + EXPANSION_SLACK.
MAX_EXPANSION = 4
EXPANSION_SLACK = 1 << 20

_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CHUNK = 1 << 20


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
        raise WeightsFileError(
            "its weights (state_dict) are not only tensors by name; the file holds objects of "
            f"{', '.join(where)}, "
            "which weights-only loading does not build"
        )


# ---------------------------------------------------------------------------------------------
# Checks before torch reads the file.


def _expansion_budget(size: int) -> int:
    return MAX_EXPANSION * size + EXPANSION_SLACK


def _check_zip_ends(fp, size: int):
    """The end records close the file and the central directory ends where they begin. Python's
    zipfile shifts every offset by any gap there (data prepended to a zip), torch's reader does
    not: without a gap both read the same records."""
    if size < _EOCD.size:
        raise WeightsFileError("a zip file too short to hold its end record")
    fp.seek(size - _EOCD.size)
    signature, _, _, _, entries, cd_size, cd_offset, comment = _EOCD.unpack(fp.read(_EOCD.size))
    if signature != b"PK\x05\x06" or comment:
        raise WeightsFileError(
            "its zip end record does not close the file (a comment or data after it)"
        )
    end = size - _EOCD.size
    if end >= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size:
        fp.seek(end - _ZIP64_LOCATOR.size)
        signature, _, record, _ = _ZIP64_LOCATOR.unpack(fp.read(_ZIP64_LOCATOR.size))
        if (
            signature == b"PK\x06\x07"
        ):  # zip64 (torch.save writes it): its record comes right before
            end -= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size
            fp.seek(end)
            fields = _ZIP64_EOCD.unpack(fp.read(_ZIP64_EOCD.size))
            if record != end or fields[0] != b"PK\x06\x06" or fields[1] != _ZIP64_EOCD.size - 12:
                raise WeightsFileError("its zip64 end record is not where its locator says")
            entries, cd_size, cd_offset = fields[7:10]
    if cd_offset + cd_size != end:
        raise WeightsFileError("its zip central directory does not end where its end record begins")
    return entries


def _deflated_size(zf: zipfile.ZipFile, info: zipfile.ZipInfo, left: int) -> int:
    """How many bytes a deflated record yields (zipfile stops at the recorded size and checks the
    CRC): never decompresses more than `left` + 1 bytes."""
    n = 0
    with zf.open(info) as record:
        while True:
            chunk = record.read(min(_CHUNK, left + 1 - n))
            if not chunk:
                return n
            n += len(chunk)
            if n > left:
                return n


def _checked_zip_data_pkl(fp, size: int, name: str) -> bytes:
    """The zip checks of the module's docstring; returns the data.pkl torch will unpickle."""
    entries = _check_zip_ends(fp, size)
    fp.seek(0)
    with zipfile.ZipFile(fp) as zf:
        infos = zf.infolist()
        if (
            not infos
            or len(infos) != entries
            or len({i.filename.lower() for i in infos}) != len(infos)
        ):
            raise WeightsFileError("its zip records are none, miscounted, or two share a name")
        for info in infos:
            stored = info.compress_type == zipfile.ZIP_STORED
            if info.flag_bits & 0x1 or not (stored or info.compress_type == zipfile.ZIP_DEFLATED):
                raise WeightsFileError(
                    f"its zip record {info.filename[:200]} is encrypted or compressed by a "
                    "method torch cannot read"
                )
            if stored and info.file_size != info.compress_size:
                raise WeightsFileError(
                    f"its zip record {info.filename[:200]} is stored with two sizes"
                )
        budget = _expansion_budget(size)
        recorded = sum(info.file_size for info in infos)
        if recorded > budget:
            raise WeightsFileError(
                _too_large(name, size, f"its zip records expand to {recorded} bytes")
            )
        for info in infos:
            if (
                info.compress_type == zipfile.ZIP_DEFLATED
                and _deflated_size(zf, info, budget) != info.file_size
            ):
                raise WeightsFileError(
                    f"its zip record {info.filename[:200]} decompresses to other than its "
                    "recorded size"
                )
        # torch reads "<folder of the first record>/data.pkl".
        return zf.read(infos[0].filename.split("/", 1)[0] + "/data.pkl")


def _too_large(name: str, size: int, what: str) -> str:
    return (
        f"{name}: {what}, more than {MAX_EXPANSION} x its size ({size} bytes) + "
        f"{EXPANSION_SLACK >> 20} MiB; "
        "torch.save stores tensor data uncompressed"
    )


def _storage_bytes(pid) -> int:
    """The bytes a legacy persistent id ('storage', type, key, location, numel, view) makes torch
    allocate (numel x element size; 16, the largest, for a type it does not name)."""
    items = pid.items if pid.kind == "tuple" else None
    if not items or len(items) < 5 or items[0].value not in ("storage", b"storage"):
        return 0
    numel = items[4].value if items[4].kind == "atom" and type(items[4].value) is int else 0
    storage_type = (
        vars(torch).get(str(items[1].value).rsplit(".", 1)[-1])
        if items[1].kind == "global"
        else None
    )
    with warnings.catch_warnings():  # the legacy storage classes are deprecated
        warnings.simplefilter("ignore")
        dtype = getattr(storage_type, "dtype", None)
    return max(numel, 0) * (dtype.itemsize if isinstance(dtype, torch.dtype) else 16)


def _scan_legacy(fp, size: int, name: str, identity_hashed: FrozenSet[str]):
    """A legacy file is five pickles in a row (magic number, protocol, system info, the data, the
    storage keys), then the storages' bytes, which torch allocates as the data's ids claim."""
    fp.seek(0)
    claimed = {}
    for index in range(5):
        found = scan_pickle(fp, identity_hashed=identity_hashed)
        for pid in found.persistent_ids if index == 3 else ():
            key = pid.items[2].value if pid.kind == "tuple" and len(pid.items) > 2 else None
            claimed.setdefault(
                key if isinstance(key, (str, int)) else len(claimed), _storage_bytes(pid)
            )
    if sum(claimed.values()) > _expansion_budget(size):
        raise WeightsFileError(
            _too_large(name, size, f"its storages claim {sum(claimed.values())} bytes")
        )


# ---------------------------------------------------------------------------------------------
# Loading.


def _names_in_file(f):
    """Every global a zip-format checkpoint names that torch does not allow (one pass, no
    loading); none for legacy files, whose names the load loop finds one at a time."""
    try:
        if hasattr(f, "seek"):
            f.seek(0)
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


def _torch_failure(error: Exception) -> str:
    """torch's reason, without its advice to load with weights_only=False (which runs the file)."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(Check the documentation|$)", text, re.S)
    text = " ".join((found.group(1) if found else text).split())
    return f"{type(error).__name__}: {text if len(text) <= 500 else text[:500] + '...'}"


@contextlib.contextmanager
def _opened(f):
    if isinstance(f, (str, bytes, os.PathLike)):
        with open(f, "rb") as fp:
            yield fp
    else:
        yield f


def _load(fp, name: str):
    size = fp.seek(0, io.SEEK_END)
    fp.seek(0)
    data_pkl = (
        _checked_zip_data_pkl(fp, size, name) if fp.read(4) == b"PK\x03\x04" else None
    )  # torch's zip test
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
            _scan_legacy(fp, size, name, identity_hashed)
        fp.seek(0)
        try:
            with torch.serialization.safe_globals([(cls, n) for n, cls in extra.items()]):
                loaded = torch.load(fp, map_location="cpu", weights_only=True)
            break
        except pickle.UnpicklingError as e:
            n = _global_name(e)
            if n is None or n in extra or n in user or len(extra) >= MAX_GLOBALS:
                raise
            extra[n] = _placeholder(n)
    if extra:
        mmdet = isinstance(loaded, dict) and "state_dict" in loaded and "model" not in loaded
        if not mmdet:
            raise WeightsFileError(
                f"its checkpoint holds objects of {', '.join(sorted(extra))}, which weights-only "
                "loading does not build"
            )
        _check_plain_weights(loaded["state_dict"], extra)
        logger.info(
            "%s: loaded without the objects of %s "
            "(metadata; weights-only loading does not build them)",
            name,
            ", ".join(sorted(extra)),
        )
    return loaded


def load_weights_only(f):
    """torch.load(f, weights_only=True) on the CPU (f: a path or a seekable binary file) after the
    checks of the module's docstring; globals torch does not allow become placeholders (logged by
    name). Raises WeightsFileError for a file it refuses or cannot read."""
    name = (
        str(f) if isinstance(f, (str, os.PathLike)) else str(getattr(f, "name", "the checkpoint"))
    )
    with _opened(f) as fp:
        try:
            return _load(fp, name)
        except WeightsFileError:
            raise
        except (
            Exception
        ) as e:  # torch.load's errors on bad bytes vary (UnpicklingError, RuntimeError, ...)
            raise WeightsFileError(_torch_failure(e)) from None
