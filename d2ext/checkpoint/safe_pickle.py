"""Loading Detectron2 / Caffe2 model-zoo ``.pkl`` weights without running the file. Detectron2
reads them with ``pickle.load``, which runs any function the file names; these files only hold
dicts of numpy arrays (and strings, numbers, OrderedDicts). This reader builds exactly that:

- The file's opcodes are checked first: no extension-registry codes, persistent ids, INST/OBJ,
  sets or out-of-band buffers, memo indices no larger than the file needs.
- It unpickles with Python's own (pure-Python) unpickler, where a memo reference (GET, DUP) may
  fetch a string, a number or a dtype again but never a container: what it builds is a tree no
  larger than the file, so hashing, printing or walking it cannot blow up.
- The few globals such files name map to stand-ins that build nothing themselves: an array is
  rebuilt from its pickled (shape, dtype, raw bytes) with ``np.frombuffer``, for bool / integer /
  float (<= 64 bit) dtypes only, in native byte order. numpy's own rebuilders would trust the
  file's dtype flags, and ``numpy.ndarray`` itself takes strides and buffers; neither is ever
  called. Stand-ins cannot be modified by the file (BUILD on them is an error), and all the bytes
  they produce together may not exceed the file's size. Any other global is an error naming it.

``D2EXT_ALLOW_UNSAFE_PICKLE=1`` restores Detectron2's plain ``pickle.load`` for files you trust.
"""
import io
import os
import pickle
import pickletools
from collections import OrderedDict

import numpy as np

ALLOW_UNSAFE_PICKLE_ENV = "D2EXT_ALLOW_UNSAFE_PICKLE"
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_REFUSED_OPCODES = {"EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "INST", "OBJ", "NEXT_BUFFER", "READONLY_BUFFER",
                    "EMPTY_SET", "ADDITEMS", "FROZENSET"}
_MAX_DIMS = 32
_MAX_DEPTH = 200


def unsafe_pickle_allowed() -> bool:
    return os.environ.get(ALLOW_UNSAFE_PICKLE_ENV, "") == "1"


class _Budget:
    """Bytes the stand-ins may still produce: the file's size. Memo references can hand one
    string or raw buffer to many stand-in calls; each copy they make is paid for here."""

    def __init__(self, size: int):
        self.left = size

    def spend(self, n: int):
        self.left -= n
        if self.left < 0:
            raise pickle.UnpicklingError("the file's arrays and bytes add up to more than its own size")


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
        ok = isinstance(spec, str) and len(spec) <= 4 and spec.isalnum()
        dtype = np.dtype(spec) if ok else None
        if dtype is None or dtype.kind not in "biuf" or dtype.itemsize > 8:
            shown = repr(spec) if ok or (isinstance(spec, str) and len(spec) <= 16) else type(spec).__name__
            raise pickle.UnpicklingError(f"array dtype {shown} is not a bool, integer or float type of <= 64 bits")
        order = self.state[1] if isinstance(self.state, tuple) and len(self.state) > 1 else "|"
        return dtype.newbyteorder(order) if order in ("<", ">") else dtype


def _array_from_bytes(shape, dtype: "_DType", fortran, raw, budget: _Budget) -> np.ndarray:
    """The checked rebuild of one pickled array, in native byte order."""
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("an array without a dtype")
    dtype = dtype.resolve()
    if isinstance(raw, str):  # Python 2 pickles read with encoding="latin1"
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError("an array whose data is not raw bytes (object arrays are refused)")
    if not (isinstance(shape, tuple) and len(shape) <= _MAX_DIMS and all(type(n) is int and 0 <= n < 2**62 for n in shape)):
        raise pickle.UnpicklingError(f"an array whose shape is not a tuple of up to {_MAX_DIMS} sizes")
    size = dtype.itemsize
    for n in shape:  # stops growing past the data: never a huge product
        size = min(size * n, len(raw) + 1)
    if len(raw) != size:
        raise pickle.UnpicklingError(f"an array of dtype {dtype} whose shape does not match its {len(raw)} bytes")
    budget.spend(len(raw))
    if dtype.kind == "b":  # any nonzero byte is True, stored as 1
        array = np.frombuffer(bytes(raw), np.uint8) != 0
    else:
        array = np.frombuffer(bytes(raw), dtype).astype(dtype.newbyteorder("="))
    return array.reshape(shape, order="F" if fortran is True else "C")


class _Array:
    """numpy's _reconstruct(ndarray, shape, dtype) as pickled; its BUILD state (version, shape,
    dtype, is_fortran, raw data) is rebuilt on the spot."""

    __slots__ = ("array", "budget")

    def __init__(self, budget: _Budget):
        self.array, self.budget = None, budget

    def __setstate__(self, state):
        if self.array is not None or not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("an array whose pickled state is not (version, shape, dtype, order, data)")
        _, shape, dtype, fortran, raw = state
        self.array = _array_from_bytes(shape, dtype, fortran, raw, self.budget)


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


def _stand_ins(budget: _Budget) -> dict:
    """The globals a weights file may name, as stand-ins paying into `budget`."""

    def ordered_dict(*args):
        if len(args) > 1 or (args and not (isinstance(args[0], list) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in args[0]))):
            raise pickle.UnpicklingError("OrderedDict with arguments other than a list of pairs")
        return _OrderedDict([tuple(p) for p in args[0]] if args else [])

    def reconstruct(cls, *args):
        if cls is not _NDARRAY:
            raise pickle.UnpicklingError("numpy _reconstruct of a type other than numpy.ndarray")
        return _Array(budget)

    def scalar(dtype, raw=None):
        if not isinstance(dtype, _DType):
            raise pickle.UnpicklingError("a numpy scalar without a dtype")
        dtype = dtype.resolve()
        raw = raw.encode("latin1") if isinstance(raw, str) and len(raw) == dtype.itemsize else raw
        if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
            raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype} with bad data")
        budget.spend(len(raw))
        return np.bool_(raw != b"\0") if dtype.kind == "b" else np.frombuffer(raw, dtype)[0].astype(dtype.newbyteorder("="))

    def frombuffer(raw, dtype, shape, order):  # numpy's pickle-protocol-5 array rebuilder
        array = _Array(budget)
        array.array = _array_from_bytes(shape, dtype, order == "F", raw, budget)
        return array

    def latin1(text, encoding="latin1"):  # _codecs.encode: how protocol-2 pickles of Python 3 store bytes
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError("_codecs.encode of something other than a str to latin1")
        budget.spend(len(text))
        return text.encode("latin1")

    def empty_bytes(*args):  # bytes(): an empty bytes object (bytes(n) would allocate n bytes)
        if args and not (len(args) == 2 and isinstance(args[0], str)):
            raise pickle.UnpicklingError("bytes() with arguments other than (str, encoding)")
        return latin1(*args) if args else b""

    return {
        **{(m, "_reconstruct"): _Call(reconstruct) for m in _MULTIARRAY},
        **{(m, "scalar"): _Call(scalar) for m in _MULTIARRAY},
        **{(m, "_frombuffer"): _Call(frombuffer) for m in _NUMERIC},
        ("_codecs", "encode"): _Call(latin1),
        ("__builtin__", "bytes"): _Call(empty_bytes),
        ("builtins", "bytes"): _Call(empty_bytes),
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Call(_DType),
        ("collections", "OrderedDict"): _Call(ordered_dict),
    }


_CONTAINERS = (tuple, list, dict, _Array, set, frozenset, bytearray)


def _no_container_again(load):
    """A memo-fetching opcode (GET, BINGET, LONG_BINGET, DUP) that refuses to fetch a container:
    shared containers are how a small file builds an exponentially large structure."""

    def checked(self):
        load(self)
        if isinstance(self.stack[-1], _CONTAINERS):
            raise pickle.UnpicklingError("the file references a container twice")

    return checked


class _SafeUnpickler(pickle._Unpickler):
    dispatch = dict(pickle._Unpickler.dispatch)
    for _code in (pickle.GET, pickle.BINGET, pickle.LONG_BINGET, pickle.DUP):
        dispatch[_code[0]] = _no_container_again(pickle._Unpickler.dispatch[_code[0]])

    def __init__(self, file, budget: _Budget):
        super().__init__(file, encoding="latin1")
        self.stand_ins = _stand_ins(budget)

    def find_class(self, module, name):
        found = self.stand_ins.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"it names {module[:100]}.{name[:100]}; model-zoo .pkl weights hold only numpy arrays, numbers "
                f"and strings (set {ALLOW_UNSAFE_PICKLE_ENV}=1 to load a file you trust with plain pickle)"
            )
        return found


def _check_opcodes(data: bytes):
    """Refuses opcodes that reach past find_class (the extension registry), persistent ids, INST /
    OBJ, sets, out-of-band buffers, and memo indices beyond the number of opcodes."""
    count = 0
    for opcode, arg, _ in pickletools.genops(data):
        count += 1
        if opcode.name in _REFUSED_OPCODES:
            raise pickle.UnpicklingError(f"opcode {opcode.name}")
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > count:
            raise pickle.UnpicklingError(f"memo index {arg}")


_ATOMS = (str, bytes, int, float, bool, type(None), np.generic)


def _resolve(obj, depth: int = 0):
    """obj (a tree: no container is shared) with every pickled array rebuilt; only dicts, lists,
    tuples and _ATOMS may hold them (anything else, e.g. a leftover stand-in: an error)."""
    if isinstance(obj, _ATOMS):
        return obj
    if depth > _MAX_DEPTH:
        raise pickle.UnpicklingError(f"nesting deeper than {_MAX_DEPTH}")
    if isinstance(obj, _Array) and obj.array is not None:
        return obj.array
    if isinstance(obj, dict):  # dict.items: not a method the file could have set on the instance
        pairs = [(_resolve(k, depth + 1), _resolve(v, depth + 1)) for k, v in dict.items(obj)]
        return OrderedDict(pairs) if isinstance(obj, OrderedDict) else dict(pairs)
    if type(obj) in (list, tuple):
        return type(obj)(_resolve(v, depth + 1) for v in obj)
    raise pickle.UnpicklingError(f"an object of type {type(obj).__name__}")


def load_pickle_weights(f):
    """pickle.load(f, encoding="latin1") for weights files, without running anything they name
    (plain pickle.load when D2EXT_ALLOW_UNSAFE_PICKLE=1)."""
    if unsafe_pickle_allowed():
        return pickle.load(f, encoding="latin1")
    data = f.read()
    _check_opcodes(data)
    return _resolve(_SafeUnpickler(io.BytesIO(data), _Budget(len(data))).load())
