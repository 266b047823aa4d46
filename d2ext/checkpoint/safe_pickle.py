"""Loading Detectron2 / Caffe2 model-zoo ``.pkl`` weights without running the file. Detectron2
reads them with ``pickle.load``, which runs any function the file names; these files only hold
dicts of numpy arrays (and strings, numbers, OrderedDicts). This unpickler builds exactly that:
numpy arrays are rebuilt from their pickled (shape, dtype, raw bytes) with ``np.frombuffer`` for
plain numeric / bool dtypes only (numpy's own rebuilders would trust the file's dtype flags and can
be made to read pointers from it); any other global the file names is an error naming it.
``D2EXT_ALLOW_UNSAFE_PICKLE=1`` restores Detectron2's plain ``pickle.load`` for files you trust.
"""
import math
import os
import pickle
from collections import OrderedDict

import numpy as np

ALLOW_UNSAFE_PICKLE_ENV = "D2EXT_ALLOW_UNSAFE_PICKLE"
_PLAIN_KINDS = "biuf"  # bool, signed / unsigned integers, floats
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")


def unsafe_pickle_allowed() -> bool:
    return os.environ.get(ALLOW_UNSAFE_PICKLE_ENV, "") == "1"


class _DType:
    """numpy.dtype(spec, align, copy) as pickled, with its BUILD state (byte order at [1])."""

    def __init__(self, spec, *args):
        self.spec, self.state = spec, None

    def __setstate__(self, state):
        self.state = state

    def resolve(self) -> np.dtype:
        spec = self.spec.decode("latin1") if isinstance(self.spec, bytes) else self.spec
        dtype = np.dtype(spec) if isinstance(spec, str) and spec.isalnum() else None
        if dtype is None or dtype.kind not in _PLAIN_KINDS:
            raise pickle.UnpicklingError(f"array dtype {spec!r} is not a plain numeric type")
        order = self.state[1] if isinstance(self.state, tuple) and len(self.state) > 1 else "|"
        if order in ("<", ">"):
            dtype = dtype.newbyteorder(order)
        return dtype


class _Array:
    """numpy.core.multiarray._reconstruct(ndarray, shape, dtype) as pickled, with its BUILD state
    (version, shape, dtype, is_fortran, raw data)."""

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def resolve(self) -> np.ndarray:
        if not (isinstance(self.state, tuple) and len(self.state) == 5 and isinstance(self.state[2], _DType)):
            raise pickle.UnpicklingError("an array whose pickled state is not (version, shape, dtype, order, data)")
        _, shape, dtype, fortran, raw = self.state
        dtype = dtype.resolve()
        if isinstance(raw, str):  # Python 2 pickles read with encoding="latin1"
            raw = raw.encode("latin1")
        if isinstance(raw, pickle.PickleBuffer):
            raw = raw.raw()
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise pickle.UnpicklingError("an array whose data is not raw bytes (object arrays are refused)")
        shape = tuple(int(s) for s in shape)
        if any(n < 0 for n in shape) or len(raw) != math.prod(shape) * dtype.itemsize:
            raise pickle.UnpicklingError(f"an array of shape {shape} and dtype {dtype} with {len(raw)} bytes")
        return np.frombuffer(bytes(raw), dtype).reshape(shape, order="F" if fortran else "C").copy()


def _reconstruct(cls, *args):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("numpy _reconstruct of a type other than numpy.ndarray")
    return _Array()


def _scalar(dtype, raw):
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("a numpy scalar without a dtype")
    dtype = dtype.resolve()
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype} with bad data")
    return np.frombuffer(raw, dtype)[0]


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


class _SafeUnpickler(pickle.Unpickler):
    GLOBALS = {
        **{(m, "_reconstruct"): _reconstruct for m in _MULTIARRAY},
        **{(m, "scalar"): _scalar for m in _MULTIARRAY},
        **{(m, "_frombuffer"): _frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
        ("_codecs", "encode"): _latin1,
        ("__builtin__", "bytes"): _bytes,
        ("builtins", "bytes"): _bytes,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _DType,
        ("collections", "OrderedDict"): OrderedDict,
    }

    def find_class(self, module, name):
        found = self.GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}; model-zoo .pkl weights hold only numpy arrays, numbers and "
                f"strings (set {ALLOW_UNSAFE_PICKLE_ENV}=1 to load a file you trust with plain pickle)"
            )
        return found


def _resolve(obj):
    """obj with every pickled array / dtype rebuilt (in dicts, their keys, lists, tuples)."""
    if isinstance(obj, (_Array, _DType)):
        return obj.resolve()
    if isinstance(obj, dict):
        return type(obj)((_resolve(k), _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def load_pickle_weights(f):
    """pickle.load(f, encoding="latin1") for weights files, without running anything they name
    (plain pickle.load when D2EXT_ALLOW_UNSAFE_PICKLE=1)."""
    if unsafe_pickle_allowed():
        return pickle.load(f, encoding="latin1")
    return _resolve(_SafeUnpickler(f, encoding="latin1").load())
