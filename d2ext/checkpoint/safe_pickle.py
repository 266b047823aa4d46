"""Loading Detectron2 / Caffe2 model-zoo ``.pkl`` weights without running the file. Detectron2
reads them with ``pickle.load``, which runs any function the file names; these files only hold
dicts of numpy arrays (and strings, numbers, OrderedDicts). ``load_pickle_weights`` builds exactly
that, and ends any other input with a ``WeightsFileError`` (d2ext/errors.py: an
``InvalidCheckpointError`` and a ``pickle.UnpicklingError``) that says why; an ``OSError`` reading
the file is passed on as it is.

Before anything is unpickled, the dry run over the file's opcodes (``scan_pickle``; its module,
d2ext/checkpoint/pickle_scan.py, lists exactly what it refuses) refuses, among others:

- (for .pkl weights only) opcodes that reach past find_class (the extension registry), persistent
  ids, INST / OBJ, sets and out-of-band buffers;
- memo indices larger than the number of opcodes read so far; frames longer than the file
  (Python's unpickler reads them, pickle.load does not);
- tuples nested more than ``MAX_TUPLE_DEPTH`` (32) deep, MARKs open more than ``MAX_NESTING``
  (200) deep, and tuples whose hash would visit more than max(``MAX_HASHED_ITEMS`` (2**20), the
  pickle's opcodes) items: hashing them crashed the process or took exponential time;
- any dict key or set item that is not a str, bytes, None, bool or an int of magnitude below
  2**61 - 1 (others could be chosen to share one hash, which makes building the dict quadratic);
- a memo reference (GET, DUP) that fetches a container again (strings, numbers and dtypes may be
  shared), and a second PROTO opcode.

Then Python's unpickler runs: what it builds is a tree no larger than the file, so hashing,
printing or walking it cannot blow up; nesting deeper than 200 is refused. The few globals such
files name map to stand-ins (through ``find_class``) that build nothing themselves:

- An array is rebuilt from its pickled (shape, dtype, raw bytes) with ``np.frombuffer``, for bool
  / integer / float (<= 64 bit) dtypes only, only when every field is one numpy itself writes
  (dtype state ``(3, byte order, None, None, None, -1, -1, 0)``, ``_reconstruct(ndarray, (0,),
  b"b")``, array state version 0 or 1 with an int / bool Fortran flag, protocol-5 order ``"C"`` or
  ``"F"``), with at most 32 dimensions. Then its shape, values and C / Fortran layout are those
  ``pickle.load`` gives; it is always a writable copy in native byte order (torch.from_numpy needs
  that), bools stored as 0 / 1. numpy's own rebuilders would trust the file's dtype flags, and
  ``numpy.ndarray`` itself takes strides and buffers; neither is ever called.
- Stand-ins cannot be modified by the file (BUILD on them is an error; a dtype's state is set at
  most once, before its first use), and all the bytes they produce together may not exceed twice
  the file's size (a protocol-2 pickle from Python 3 holds an array's data as a latin1 str, encoded
  to bytes, then copied into the array). Any other global is an error naming it.

Whatever this reader returns equals what ``pickle.load(f, encoding="latin1")`` returns for the
same file, up to the arrays' byte order, bool bytes and writability above (tests/security fuzz and
property-test that against it).
``D2EXT_ALLOW_UNSAFE_PICKLE=1`` restores Detectron2's plain ``pickle.load`` for files you trust.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict

import numpy as np

from d2ext.errors import WeightsFileError

from .pickle_scan import (
    MAX_HASHED_ITEMS,
    MAX_NESTING,
    MAX_TUPLE_DEPTH,
    ScanResult,
    describe,
    mapped_name,
    scan_pickle,
)

__all__ = [
    "ALLOW_UNSAFE_PICKLE_ENV",
    "WeightsFileError",
    "load_pickle_weights",
    "unsafe_pickle_allowed",
    # Where they were before d2ext/checkpoint/pickle_scan.py held them.
    "MAX_HASHED_ITEMS",
    "MAX_NESTING",
    "MAX_TUPLE_DEPTH",
    "ScanResult",
    "scan_pickle",
]

ALLOW_UNSAFE_PICKLE_ENV = "D2EXT_ALLOW_UNSAFE_PICKLE"
# Opcodes model-zoo weights never hold (scan_pickle refuses them on top of its own rules).
_REFUSED_OPCODES = frozenset(
    {
        "EXT1",
        "EXT2",
        "EXT4",
        "PERSID",
        "BINPERSID",
        "INST",
        "OBJ",
        "NEXT_BUFFER",
        "READONLY_BUFFER",
        "EMPTY_SET",
        "ADDITEMS",
        "FROZENSET",
    }
)
_MAX_DIMS = 32
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")


def unsafe_pickle_allowed() -> bool:
    return os.environ.get(ALLOW_UNSAFE_PICKLE_ENV, "") == "1"


def load_pickle_weights(f):
    """pickle.load(f, encoding="latin1") for weights files, without running anything they name
    (plain pickle.load when D2EXT_ALLOW_UNSAFE_PICKLE=1). Raises WeightsFileError for any file it
    refuses or cannot read (see the module's docstring)."""
    if unsafe_pickle_allowed():
        return pickle.load(f, encoding="latin1")
    data = f.read()
    scanned = scan_pickle(data, refused=_REFUSED_OPCODES, tree=True)
    try:
        unpickler = _SafeUnpickler(io.BytesIO(data), _Budget(2 * len(data)), scanned.protocol)
        return _resolve(unpickler.load())
    except WeightsFileError:
        raise
    except Exception as e:  # the unpickler on a damaged file: EOFError, TypeError, KeyError, ...
        raise WeightsFileError(describe(e)) from None


_ATOMS = (str, bytes, int, float, bool, type(None), np.generic)


def _resolve(obj, depth: int = 0):
    """obj (a tree: no container is shared) with every pickled array rebuilt; only dicts, lists,
    tuples and _ATOMS may hold them (anything else, e.g. a leftover stand-in: an error)."""
    if isinstance(obj, _ATOMS):
        return obj
    if depth > MAX_NESTING:
        raise WeightsFileError(f"nesting deeper than {MAX_NESTING}")
    if isinstance(obj, _Array) and obj.array is not None:
        return obj.array
    if isinstance(obj, dict):  # dict.items: not a method the file could have set on the instance
        pairs = [(_resolve(k, depth + 1), _resolve(v, depth + 1)) for k, v in dict.items(obj)]
        return OrderedDict(pairs) if isinstance(obj, OrderedDict) else dict(pairs)
    if type(obj) in (list, tuple):
        return type(obj)(_resolve(v, depth + 1) for v in obj)
    raise WeightsFileError(f"an object of type {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------
# The unpickler.


class _SafeUnpickler(pickle.Unpickler):
    """Python's unpickler restricted to the stand-ins (its documented find_class hook)."""

    def __init__(self, file, budget: _Budget, protocol: int):
        super().__init__(file, encoding="latin1")
        self.stand_ins = _stand_ins(budget)
        self.protocol = protocol

    def find_class(self, module, name):
        shown = f"{module[:100]}.{name[:100]}"
        if self.protocol < 3:  # Python 2 names, mapped as pickle maps them (and only then)
            module, name = mapped_name(module, name)
        found = self.stand_ins.get((module, name))
        if found is None:
            raise WeightsFileError(
                f"it names {shown}; model-zoo .pkl weights hold only numpy arrays, numbers "
                f"and strings (set {ALLOW_UNSAFE_PICKLE_ENV}=1 to load a file you trust with "
                "plain pickle)"
            )
        return found


# ---------------------------------------------------------------------------------------------
# The stand-ins.


def _stand_ins(budget: _Budget) -> dict:
    """The globals a weights file may name, as stand-ins paying into `budget`."""

    def ordered_dict(*args):
        if len(args) > 1 or (args and not _is_list_of_pairs(args[0])):
            raise WeightsFileError("OrderedDict with arguments other than a list of pairs")
        return _OrderedDict([tuple(p) for p in args[0]] if args else [])

    def reconstruct(cls, *args):
        # What numpy pickles: ndarray of shape (0,), typecode "b"; its real state comes by BUILD.
        ok = (
            len(args) == 2
            and type(args[0]) is tuple
            and args[0] == (0,)
            and type(args[1]) in (bytes, str)
        )
        if cls is not _NDARRAY or not ok or args[1] not in (b"b", "b"):
            raise WeightsFileError(
                "numpy _reconstruct with arguments other than (numpy.ndarray, (0,), b'b')"
            )
        return _Array(budget)

    def scalar(dtype, raw=None):
        if not isinstance(dtype, _DType):
            raise WeightsFileError("a numpy scalar without a dtype")
        dtype = dtype.resolve()
        raw = raw.encode("latin1") if isinstance(raw, str) and len(raw) == dtype.itemsize else raw
        if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
            raise WeightsFileError(f"a numpy scalar of dtype {dtype} with bad data")
        budget.spend(len(raw))
        if dtype.kind == "b":
            return np.bool_(raw != b"\0")
        return np.frombuffer(raw, dtype)[0].astype(dtype.newbyteorder("="))

    def frombuffer(raw, dtype, shape, order):  # numpy's pickle-protocol-5 array rebuilder
        if not (type(order) is str and order in ("C", "F")):  # numpy also reads "f", "A", b"F"...
            raise WeightsFileError("a protocol-5 array whose order is not 'C' or 'F'")
        array = _Array(budget)
        array.array = _array_from_bytes(shape, dtype, order == "F", raw, budget)
        return array

    def latin1(text, encoding):  # _codecs.encode: how protocol-2 pickles of Python 3 store bytes
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise WeightsFileError("_codecs.encode of something other than a str to latin1")
        budget.spend(len(text))
        return text.encode("latin1")

    def empty_bytes(*args):  # bytes(): an empty bytes object (bytes(n) would allocate n bytes)
        if args and not (len(args) == 2 and isinstance(args[0], str)):
            raise WeightsFileError("bytes() with arguments other than (str, encoding)")
        return latin1(*args) if args else b""

    return {
        **{(m, "_reconstruct"): _Call(reconstruct) for m in _MULTIARRAY},
        **{(m, "scalar"): _Call(scalar) for m in _MULTIARRAY},
        **{(m, "_frombuffer"): _Call(frombuffer) for m in _NUMERIC},
        ("_codecs", "encode"): _Call(latin1),
        ("builtins", "bytes"): _Call(empty_bytes),
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Call(_DType),
        ("collections", "OrderedDict"): _Call(ordered_dict),
    }


def _is_list_of_pairs(x) -> bool:
    return isinstance(x, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in x)


class _Budget:
    """Bytes the stand-ins may still produce: twice the file's size. Memo references can hand one
    string or raw buffer to many stand-in calls; each copy they make is paid for here."""

    def __init__(self, size: int):
        self.left = size

    def spend(self, n: int):
        self.left -= n
        if self.left < 0:
            raise WeightsFileError(
                "the file's arrays and bytes add up to more than twice its own size"
            )


class _Sealed:
    """Base of every stand-in: BUILD (__setstate__) on it is an error unless it defines its own."""

    __slots__ = ()

    def __setstate__(self, state):
        raise WeightsFileError(f"the file sets the state of {type(self).__name__}")


class _Call(_Sealed):
    """A stand-in function: calls `fn` with the file's arguments."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


class _NDArrayName(_Sealed):
    """numpy.ndarray as _reconstruct's first argument: neither callable nor a class."""

    __slots__ = ()


_NDARRAY = _NDArrayName()


class _OrderedDict(OrderedDict):
    """OrderedDict(pairs) or OrderedDict() then SETITEMS; BUILD on it is an error."""

    def __setstate__(self, state):
        raise WeightsFileError("the file sets the state of an OrderedDict")


class _DType:
    """numpy.dtype(spec, align, copy) and its BUILD state, each checked as the file sets it:
    only what numpy writes for a bool / integer / float dtype (then numpy builds the same)."""

    __slots__ = ("dtype", "state", "used")

    def __init__(self, spec=None, *flags):
        spec = spec.decode("latin1") if isinstance(spec, bytes) else spec
        ok = isinstance(spec, str) and len(spec) <= 4 and spec.isascii() and spec.isalnum()
        dtype = np.dtype(spec) if ok else None
        if dtype is None or dtype.kind not in "biuf" or dtype.itemsize > 8:
            if ok or (isinstance(spec, str) and len(spec) <= 16):
                shown = repr(spec)
            else:
                shown = type(spec).__name__
            raise WeightsFileError(
                f"array dtype {shown} is not a bool, integer or float type of <= 64 bits"
            )
        if not (len(flags) == 2 and all(type(a) in (bool, int) and a in (0, 1) for a in flags)):
            raise WeightsFileError(f"a {dtype} dtype pickled with arguments numpy does not write")
        self.dtype, self.state, self.used = dtype, None, False

    def __setstate__(self, state):
        # numpy's BUILD mutates the dtype in place, arrays already built on it included.
        if self.state is not None or self.used:
            raise WeightsFileError("the file sets the state of a dtype twice or after using it")
        if not _is_numpy_dtype_state(state):
            raise WeightsFileError(
                f"a {self.dtype} dtype pickled with a state numpy does not write"
            )
        self.state = state

    def resolve(self) -> np.dtype:
        self.used = True
        order = self.state[1] if self.state is not None else "="
        return self.dtype.newbyteorder(order) if order in ("<", ">") else self.dtype


def _is_numpy_dtype_state(state) -> bool:
    """(3, byte order, None, None, None, -1, -1, 0): numpy's state for bool / int / float."""
    return (
        isinstance(state, tuple)
        and len(state) == 8
        and _is_int(state[0], 3)
        and type(state[1]) is str
        and state[1] in ("<", ">", "|", "=")
        and all(x is None for x in state[2:5])
        and all(_is_int(x, -1) for x in state[5:7])
        and _is_int(state[7], 0)
    )


def _is_int(x, *allowed) -> bool:
    return type(x) is int and (not allowed or x in allowed)


class _Array:
    """numpy's _reconstruct(ndarray, (0,), b"b") as pickled; its BUILD state (version, shape,
    dtype, is_fortran, raw data) is rebuilt on the spot."""

    __slots__ = ("array", "budget")

    def __init__(self, budget: _Budget):
        self.array, self.budget = None, budget

    def __setstate__(self, state):
        if self.array is not None or not (isinstance(state, tuple) and len(state) == 5):
            raise WeightsFileError(
                "an array whose pickled state is not (version, shape, dtype, order, data)"
            )
        version, shape, dtype, fortran, raw = state
        # numpy reads the flag as a C int (any nonzero int: Fortran order) and the data as bytes
        # (or a latin1 str, from Python 2); it refuses a bytearray here.
        flag_ok = type(fortran) in (bool, int) and -(2**31) <= fortran < 2**31
        if not (_is_int(version, 0, 1) and flag_ok):
            raise WeightsFileError(
                "an array whose pickled version or Fortran flag numpy would not read"
            )
        self.array = _array_from_bytes(
            shape, dtype, fortran != 0, raw, self.budget, raw_types=bytes
        )


def _array_from_bytes(
    shape, dtype: _DType, fortran: bool, raw, budget: _Budget, raw_types=(bytes, bytearray)
) -> np.ndarray:
    """The checked rebuild of one pickled array (Fortran order if `fortran`), in native byte
    order."""
    if not isinstance(dtype, _DType):
        raise WeightsFileError("an array without a dtype")
    dtype = dtype.resolve()
    if isinstance(raw, str):  # Python 2 pickles read with encoding="latin1"
        raw = raw.encode("latin1")
    if not isinstance(raw, raw_types):
        raise WeightsFileError("an array whose data is not raw bytes (object arrays are refused)")
    sizes = isinstance(shape, tuple) and all(type(n) is int and 0 <= n < 2**62 for n in shape)
    if not (sizes and len(shape) <= _MAX_DIMS):
        raise WeightsFileError(f"an array whose shape is not a tuple of up to {_MAX_DIMS} sizes")
    size = dtype.itemsize
    for n in shape:  # stops growing past the data: never a huge product
        size = min(size * n, len(raw) + 1)
    if len(raw) != size:
        raise WeightsFileError(
            f"an array of dtype {dtype} whose shape does not match its {len(raw)} bytes"
        )
    budget.spend(len(raw))
    if dtype.kind == "b":  # any nonzero byte is True, stored as 1
        array = np.frombuffer(bytes(raw), np.uint8) != 0
    else:
        array = np.frombuffer(bytes(raw), dtype).astype(dtype.newbyteorder("="))
    return array.reshape(shape, order="F" if fortran else "C")


# What the memo may not hand out twice (_no_container_again).
