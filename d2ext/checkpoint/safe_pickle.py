"""Loading Detectron2 / Caffe2 model-zoo ``.pkl`` weights without running the file. Detectron2
reads them with ``pickle.load``, which runs any function the file names; these files only hold
dicts of numpy arrays (and strings, numbers, OrderedDicts). This reader builds exactly that:

- The file's opcodes are checked first: no extension-registry codes, persistent ids, INST/OBJ or
  out-of-band buffers, memo indices no larger than the file needs.
- The few globals such files name map to stand-ins that build nothing themselves: an array is
  rebuilt from its pickled (shape, dtype, raw bytes) with ``np.frombuffer``, for bool / integer /
  float (<= 64 bit) dtypes only. numpy's own rebuilders would trust the file's dtype flags, and
  ``numpy.ndarray`` itself takes strides and buffers; neither is ever called. Stand-ins cannot be
  modified by the file (BUILD on them is an error). Any other global is an error naming it.
- The result is rebuilt once per pickled object (shared references stay shared: no blow-up), and
  only of dicts, lists, tuples, strings, bytes, numbers, None and those arrays.

``D2EXT_ALLOW_UNSAFE_PICKLE=1`` restores Detectron2's plain ``pickle.load`` for files you trust.
"""
import io
import math
import os
import pickle
import pickletools
from collections import OrderedDict

import numpy as np

ALLOW_UNSAFE_PICKLE_ENV = "D2EXT_ALLOW_UNSAFE_PICKLE"
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_REFUSED_OPCODES = {"EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "INST", "OBJ", "NEXT_BUFFER", "READONLY_BUFFER"}
_MAX_DEPTH = 200


def unsafe_pickle_allowed() -> bool:
    return os.environ.get(ALLOW_UNSAFE_PICKLE_ENV, "") == "1"


class _Sealed:
    """Base of every stand-in: BUILD (__setstate__) on it is an error unless it defines its own."""

    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"the file sets the state of {type(self).__name__}")


class _NDArrayName(_Sealed):
    """numpy.ndarray as _reconstruct's first argument: neither callable nor a class."""

    __slots__ = ()


_NDARRAY = _NDArrayName()


class _DType:
    """numpy.dtype(spec, align, copy) as pickled, with its BUILD state (byte order at [1])."""

    __slots__ = ("spec", "state")

    def __init__(self, spec=None, *args):
        self.spec, self.state = spec, None

    def __setstate__(self, state):
        self.state = state

    def resolve(self) -> np.dtype:
        spec = self.spec.decode("latin1") if isinstance(self.spec, bytes) else self.spec
        dtype = np.dtype(spec) if isinstance(spec, str) and spec.isalnum() and len(spec) <= 4 else None
        if dtype is None or dtype.kind not in "biuf" or dtype.itemsize > 8:
            raise pickle.UnpicklingError(f"array dtype {spec!r} is not a bool, integer or float type of <= 64 bits")
        order = self.state[1] if isinstance(self.state, tuple) and len(self.state) > 1 else "|"
        return dtype.newbyteorder(order) if order in ("<", ">") else dtype


class _Array:
    """numpy's _reconstruct(ndarray, shape, dtype) as pickled, with its BUILD state (version,
    shape, dtype, is_fortran, raw data)."""

    __slots__ = ("state",)

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def resolve(self) -> np.ndarray:
        state = self.state
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _DType)):
            raise pickle.UnpicklingError("an array whose pickled state is not (version, shape, dtype, order, data)")
        _, shape, dtype, fortran, raw = state
        dtype = dtype.resolve()
        if isinstance(raw, str):  # Python 2 pickles read with encoding="latin1"
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("an array whose data is not raw bytes (object arrays are refused)")
        if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
            raise pickle.UnpicklingError(f"an array of shape {shape!r}")
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise pickle.UnpicklingError(f"an array of shape {shape} and dtype {dtype} with {len(raw)} bytes")
        if dtype.kind == "b":  # any nonzero byte is True, stored as 1
            array = np.frombuffer(bytes(raw), np.uint8) != 0
        else:
            array = np.frombuffer(bytes(raw), dtype).copy()
        return array.reshape(shape, order="F" if fortran is True else "C")


class _Call(_Sealed):
    """A stand-in function: calls `fn` with the file's arguments."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


class _OrderedDict(OrderedDict):
    """OrderedDict(pairs) or OrderedDict() then SETITEMS; BUILD on it is an error."""

    def __setstate__(self, state):
        raise pickle.UnpicklingError("the file sets the state of an OrderedDict")


def _ordered_dict(*args):
    if len(args) > 1 or (args and not (isinstance(args[0], list) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in args[0]))):
        raise pickle.UnpicklingError("OrderedDict with arguments other than a list of pairs")
    return _OrderedDict([tuple(p) for p in args[0]] if args else [])


def _reconstruct(cls, *args):
    if cls is not _NDARRAY:
        raise pickle.UnpicklingError("numpy _reconstruct of a type other than numpy.ndarray")
    return _Array()


def _scalar(dtype, raw=None):
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("a numpy scalar without a dtype")
    dtype = dtype.resolve()
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype} with bad data")
    return np.bool_(raw != b"\0") if dtype.kind == "b" else np.frombuffer(raw, dtype)[0]


def _frombuffer(raw, dtype, shape, order):
    """numpy's pickle-protocol-5 array rebuilder, checked as an _Array."""
    array = _Array()
    array.__setstate__((1, shape, dtype, order == "F", raw))
    return array


def _latin1(text, encoding="latin1"):
    """_codecs.encode(str, "latin1"): how protocol-2 pickles written by Python 3 store bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _bytes(*args):
    """bytes() as protocol-2 pickles written by Python 3 store an empty bytes object (bytes(n) would
    let a file allocate n bytes)."""
    if args and not (len(args) == 2 and isinstance(args[0], str)):
        raise pickle.UnpicklingError("bytes() with arguments other than (str, encoding)")
    return _latin1(*args) if args else b""


_GLOBALS = {
    **{(m, "_reconstruct"): _Call(_reconstruct) for m in _MULTIARRAY},
    **{(m, "scalar"): _Call(_scalar) for m in _MULTIARRAY},
    **{(m, "_frombuffer"): _Call(_frombuffer) for m in _NUMERIC},
    ("_codecs", "encode"): _Call(_latin1),
    ("__builtin__", "bytes"): _Call(_bytes),
    ("builtins", "bytes"): _Call(_bytes),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Call(_DType),
    ("collections", "OrderedDict"): _Call(_ordered_dict),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}; model-zoo .pkl weights hold only numpy arrays, numbers and "
                f"strings (set {ALLOW_UNSAFE_PICKLE_ENV}=1 to load a file you trust with plain pickle)"
            )
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("a persistent id")


def _check_opcodes(data: bytes):
    """Refuses opcodes that reach past find_class (the extension registry), persistent ids, INST /
    OBJ, out-of-band buffers, and memo indices beyond the number of opcodes (the C unpickler would
    allocate a table that large)."""
    count = 0
    for opcode, arg, _ in pickletools.genops(data):
        count += 1
        if opcode.name in _REFUSED_OPCODES:
            raise pickle.UnpicklingError(f"opcode {opcode.name}")
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > count:
            raise pickle.UnpicklingError(f"memo index {arg}")


_ATOMS = (str, bytes, int, float, bool, type(None), np.generic)


def _resolve(obj, done: dict, depth: int = 0):
    """obj with every pickled array / dtype rebuilt, each pickled object once; only dicts, lists,
    tuples and _ATOMS may hold them (sets, leftover stand-ins: an error)."""
    if isinstance(obj, _ATOMS):
        return obj
    if id(obj) in done:
        if done[id(obj)] is None:
            raise pickle.UnpicklingError("a container that holds itself")
        return done[id(obj)]
    if depth > _MAX_DEPTH:
        raise pickle.UnpicklingError(f"nesting deeper than {_MAX_DEPTH}")
    done[id(obj)] = None
    if isinstance(obj, (_Array, _DType)):
        out = obj.resolve()
    elif isinstance(obj, dict):  # dict.items: not a method the file could have set on the instance
        pairs = [(_resolve(k, done, depth + 1), _resolve(v, done, depth + 1)) for k, v in dict.items(obj)]
        out = OrderedDict(pairs) if isinstance(obj, OrderedDict) else dict(pairs)
    elif type(obj) in (list, tuple):
        out = type(obj)(_resolve(v, done, depth + 1) for v in obj)
    else:
        raise pickle.UnpicklingError(f"an object of type {type(obj).__name__}")
    done[id(obj)] = out
    return out


def load_pickle_weights(f):
    """pickle.load(f, encoding="latin1") for weights files, without running anything they name
    (plain pickle.load when D2EXT_ALLOW_UNSAFE_PICKLE=1)."""
    if unsafe_pickle_allowed():
        return pickle.load(f, encoding="latin1")
    data = f.read()
    _check_opcodes(data)
    return _resolve(_SafeUnpickler(io.BytesIO(data), encoding="latin1").load(), {})
