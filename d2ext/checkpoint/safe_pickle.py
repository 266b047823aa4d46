"""Loading Detectron2 / Caffe2 model-zoo ``.pkl`` weights without running the file. Detectron2
reads them with ``pickle.load``, which runs any function the file names; these files only hold
dicts of numpy arrays (and strings, numbers, OrderedDicts). ``load_pickle_weights`` builds exactly
that, and ends any other input with a ``WeightsFileError`` (a ``pickle.UnpicklingError``) that
says why; an ``OSError`` reading the file is passed on as it is.

Before anything is unpickled, a dry run over the file's opcodes (``scan_pickle``, also run by
d2ext/checkpoint/weights_only.py on what torch will unpickle) refuses:

- opcodes that reach past find_class (the extension registry), persistent ids, INST / OBJ, sets
  and out-of-band buffers; memo indices larger than the number of opcodes read so far; frames
  longer than the file (Python's unpickler reads them, pickle.load does not);
- tuples nested more than ``MAX_TUPLE_DEPTH`` (32) deep, and MARKs open more than
  ``MAX_NESTING`` (200) deep. Hashing a tuple recurses in C once per level without a limit: a 1 MB
  file of nested tuples used as a dict key crashed the process (SIGSEGV);
- a tuple whose hash would visit more than ``MAX_HASHED_ITEMS`` (2**20) items, or more than the
  pickle's opcodes read so far if that is larger: only tuples that share tuples get there, and
  exponentially (t = (t, t) 31 times over, 200 bytes, hashes 2**31 tuples);
- any dict key or set item that is not a str, bytes, None, bool or an int of magnitude below
  ``sys.hash_info.modulus`` (2**61 - 1). str and bytes hashes are salted per process (SipHash);
  such ints hash to themselves, so no two share a hash (but -1 and -2). Every other key (a float,
  a larger int, a tuple, an object the file builds) could be one of many the file chose to share
  one hash, which makes building the dict quadratic (519 KB of int keys took pickle.load 10 s).
  The dry run tracks memo references and follows the keys that ``OrderedDict(pairs)``,
  ``set(items)``, ``frozenset(items)`` and ``Counter(items)`` hash, and what BUILD on an
  OrderedDict / Counter adds; persistent ids (torch's storage keys) are held to the same rule.

Then Python's own (pure-Python) unpickler runs, where a memo reference (GET, DUP) may fetch a
string, a number or a dtype again but never a container: what it builds is a tree no larger than
the file, so hashing, printing or walking it cannot blow up; nesting deeper than 200 is refused.
The few globals such files name map to stand-ins that build nothing themselves:

- An array is rebuilt from its pickled (shape, dtype, raw bytes) with ``np.frombuffer``, for bool
  / integer / float (<= 64 bit) dtypes only, only when every field is one numpy itself writes
  (dtype state ``(3, byte order, None, None, None, -1, -1, 0)``, ``_reconstruct(ndarray, (0,),
  b"b")``, array state version 0 or 1 with an int / bool Fortran flag, protocol-5 order ``"C"`` or
  ``"F"``). Then its shape, values and C / Fortran layout are those ``pickle.load`` gives; it is
  always a writable copy in native byte order (torch.from_numpy needs that), bools stored as 0 / 1.
  numpy's own rebuilders would trust the file's dtype flags, and ``numpy.ndarray`` itself takes
  strides and buffers; neither is ever called.
- Stand-ins cannot be modified by the file (BUILD on them is an error; a dtype's state is set at
  most once, before its first use), and all the bytes they produce together may not exceed twice
  the file's size (a protocol-2 pickle from Python 3 holds an array's data as a latin1 str, encoded
  to bytes, then copied into the array). Any other global is an error naming it.

Whatever this reader returns equals what ``pickle.load(f, encoding="latin1")`` returns for the
same file, up to the arrays' byte order, bool bytes and writability above (tests/security fuzz and
property-test that against it).
``D2EXT_ALLOW_UNSAFE_PICKLE=1`` restores Detectron2's plain ``pickle.load`` for files you trust.
"""

import _compat_pickle
import io
import os
import pickle
import pickletools
import sys
from collections import OrderedDict
from typing import FrozenSet, List

import numpy as np

ALLOW_UNSAFE_PICKLE_ENV = "D2EXT_ALLOW_UNSAFE_PICKLE"
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
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
_MAX_DEPTH = 200
MAX_TUPLE_DEPTH = 32
MAX_NESTING = _MAX_DEPTH
MAX_HASHED_ITEMS = 1 << 20


class WeightsFileError(pickle.UnpicklingError):
    """A weights or checkpoint file that d2ext's readers refuse or cannot read (the message says
    why)."""


def unsafe_pickle_allowed() -> bool:
    return os.environ.get(ALLOW_UNSAFE_PICKLE_ENV, "") == "1"


# ---------------------------------------------------------------------------------------------
# The dry run over a pickle's opcodes.


class _Node:
    """What the dry run knows of one object the unpickler would build: its kind ("atom", "tuple",
    "list", "dict", "set", "global", "call", "other"), its value (an atom's, a global's or a
    called global's name), the items of a tuple or list; for what may be a tuple, how deep tuples
    nest in it and how many items hashing it visits (`size`, shared tuples counted each time);
    whether it is `plain`: a key-safe atom, a global, or a tuple of plain items."""

    __slots__ = ("kind", "value", "items", "depth", "size", "plain")

    def __init__(self, kind, value=None, items=None, depth=0, size=0, plain=False):
        self.kind, self.value, self.items, self.depth, self.size, self.plain = (
            kind,
            value,
            items,
            depth,
            size,
            plain,
        )


_KEY_ATOMS = (str, bytes, bool, type(None))
# Called with an iterable, these hash each of its items / the first of each of its pairs.
_HASHES_ITEMS = frozenset({"builtins.set", "builtins.frozenset", "collections.Counter"})
_HASHES_PAIRS = frozenset({"builtins.dict", "collections.OrderedDict"})
# These return str or bytes, whose hashes are salted too (how protocol-2 pickles store bytes).
_SALTED_CALLS = frozenset({"_codecs.encode", "builtins.bytes"})
# BUILD on these updates their __dict__ from the state (torch's weights-only unpickler).
_UPDATES_DICT = frozenset({"collections.OrderedDict", "collections.Counter"})


def _mapped(module: str, name: str):
    """(module, name) as unpicklers resolve Python 2 names (torch's always, Python's below
    protocol 3)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _atom(value) -> _Node:
    if isinstance(value, (str, bytes)) and len(value) > 256:
        value = value[
            :0
        ]  # only short strings matter (global names, storage ids); keep no copy of data
    # Hashes the file cannot choose: salted (str, bytes), or an int's own value (distinct ints,
    # distinct hashes).
    plain = isinstance(value, _KEY_ATOMS) or (
        type(value) is int and abs(value) < sys.hash_info.modulus
    )
    return _Node("atom", value, plain=plain)


class ScanResult:
    """What a dry run found: the pickle's persistent ids (nodes: torch's storage references)."""

    def __init__(self):
        self.persistent_ids: List[_Node] = []


class _Scan:
    """The unpickler's stack and memo, as _Nodes, over one pickle's opcodes."""

    def __init__(self, refused: FrozenSet[str], identity_hashed: FrozenSet[str]):
        self.refused, self.identity_hashed = refused, identity_hashed | _SALTED_CALLS
        self.stack: List[_Node] = []
        self.marks: List[int] = []
        self.memo = {}
        self.count = 0  # opcodes read so far
        self.result = ScanResult()

    # Stack access as the unpickler does it: items above the last MARK only.
    def pop(self, n: int) -> List[_Node]:
        floor = self.marks[-1] if self.marks else 0
        if len(self.stack) - floor < n:
            raise WeightsFileError("the pickle's opcodes take more from the stack than it holds")
        items = self.stack[len(self.stack) - n :]
        del self.stack[len(self.stack) - n :]
        return items

    def top(self) -> _Node:
        item = self.pop(1)[0]
        self.stack.append(item)
        return item

    def pop_mark(self) -> List[_Node]:
        if not self.marks:
            raise WeightsFileError("the pickle's opcodes close a MARK that is not open")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def tuple_of(self, items: List[_Node], kind: str = "tuple") -> _Node:
        depth = 1 + max((item.depth for item in items), default=0)
        if depth > MAX_TUPLE_DEPTH:
            raise WeightsFileError(
                f"tuples nested more than {MAX_TUPLE_DEPTH} deep (hashing them could crash)"
            )
        # Without shared tuples, hashing one visits at most as many items as there were opcodes;
        # sharing makes that exponential (t = (t, t), 32 times over).
        size, bound = (
            len(items) + sum(item.size for item in items),
            max(MAX_HASHED_ITEMS, self.count),
        )
        if size > bound:
            raise WeightsFileError(f"a tuple whose hash would visit more than {bound} items")
        return _Node(
            kind, items=items, depth=depth, size=size, plain=all(item.plain for item in items)
        )

    # What may be hashed.
    def check_key(self, node: _Node):
        if node.plain and node.kind in ("atom", "global"):
            return
        if node.kind == "call" and node.value in self.identity_hashed:
            return  # a d2ext placeholder (hashed by identity), or str / bytes
        if node.kind == "atom":
            value = node.value
            what = (
                f"an int of {value.bit_length()} bits"
                if type(value) is int
                else f"a {type(value).__name__}"
            )
        else:
            what = f"an object built by {node.value}" if node.kind == "call" else f"a {node.kind}"
        raise WeightsFileError(
            f"a dict key or set item that is {what}; keys may be str, bytes, None, bool or ints "
            "below 2**61 - 1 in magnitude (others could be chosen to share one hash, making "
            "loading quadratic)"
        )

    def check_iterable(self, node: _Node, pairs: bool):
        """The keys hashed when node (a call's argument, a BUILD state) fills a set or a dict. Dicts
        and sets hold checked keys; atoms and built objects yield strings, small ints or objects
        hashed by identity."""
        if node.kind not in ("list", "tuple"):
            return
        for item in node.items:
            if not pairs:
                self.check_key(item)
            elif item.kind in ("list", "tuple") and item.items:
                self.check_key(item.items[0])

    def call(self, callee: _Node, args: _Node, hashes: bool = True) -> _Node:
        """callee(*args), or cls.__new__(cls, *args) (which hashes nothing unless `hashes`)."""
        name = callee.value if callee.kind == "global" else None
        spread = args.kind in ("tuple", "list")
        if hashes and (name in _HASHES_ITEMS or name in _HASHES_PAIRS):
            if not spread:
                raise WeightsFileError(f"{name} called with arguments that are not a tuple or list")
            if args.items:
                self.check_iterable(args.items[0], pairs=name in _HASHES_PAIRS)
        # A call may return a tuple of its arguments (a namedtuple): as deep and large as they
        # are, or more.
        like = (
            self.tuple_of(args.items)
            if spread
            else _Node("tuple", depth=args.depth + 1, size=args.size + 1)
        )
        return _Node("call", name, depth=like.depth, size=like.size)

    def build(self, target: _Node, state: _Node):
        if target.kind == "call" and target.value in _UPDATES_DICT:
            self.check_iterable(state, pairs=True)
            if state.kind == "tuple" and len(state.items) == 2:  # (state, slotstate)
                self.check_iterable(state.items[0], pairs=True)

    def step(self, name: str, arg, count: int):
        push = self.stack.append
        self.count = count
        if name in self.refused:
            raise WeightsFileError(f"opcode {name}")
        if name == "MARK":
            self.marks.append(len(self.stack))
            if len(self.marks) > MAX_NESTING:
                raise WeightsFileError(f"MARKs nested more than {MAX_NESTING} deep")
        elif name == "POP":  # as Python's unpickler: the last MARK when nothing lies above it
            if len(self.stack) > (self.marks[-1] if self.marks else 0):
                self.pop(1)
            else:
                self.pop_mark()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            push(self.top())
        elif name in ("TUPLE", "EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            push(
                self.tuple_of(self.pop_mark() if name == "TUPLE" else self.pop(_TUPLE_SIZES[name]))
            )
        elif name in ("EMPTY_LIST", "LIST"):
            push(_Node("list", items=self.pop_mark() if name == "LIST" else []))
        elif name in ("EMPTY_DICT", "DICT", "EMPTY_SET"):
            items = self.pop_mark() if name == "DICT" else []
            for key in items[::2]:
                self.check_key(key)
            push(_Node("set" if name == "EMPTY_SET" else "dict"))
        elif name == "FROZENSET":
            items = self.pop_mark()
            for key in items:
                self.check_key(key)
            push(self.tuple_of(items, "set"))
        elif name in ("APPEND", "APPENDS"):
            items = self.pop_mark() if name == "APPENDS" else self.pop(1)
            target = self.top()
            if target.kind == "list":
                target.items.extend(items)
        elif name in ("SETITEM", "SETITEMS", "ADDITEMS"):
            items = self.pop_mark() if name != "SETITEM" else self.pop(2)
            for key in items if name == "ADDITEMS" else items[::2]:
                self.check_key(key)
            self.top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise WeightsFileError(f"memo index {arg} read before it is written")
            push(self.memo[arg])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            index = len(self.memo) if name == "MEMOIZE" else int(arg)
            if index < 0 or index > count:
                raise WeightsFileError(f"memo index {arg}")
            self.memo[index] = self.top()
        elif name in ("GLOBAL", "STACK_GLOBAL", "INST"):
            if name == "STACK_GLOBAL":
                module, qualname = (n.value if n.kind == "atom" else None for n in self.pop(2))
            else:
                module, _, qualname = arg.partition(" ")
            named = isinstance(module, str) and isinstance(qualname, str)
            full = ".".join(_mapped(module, qualname)) if named else None
            callee = _Node("global", full, plain=True)
            push(
                self.call(callee, _Node("tuple", items=self.pop_mark()))
                if name == "INST"
                else callee
            )
        elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
            callee, args = self.pop(3)[:2] if name == "NEWOBJ_EX" else self.pop(2)
            # cls.__new__ fills nothing, but frozenset's (immutable: filled when made)
            push(
                self.call(
                    callee, args, hashes=name == "REDUCE" or callee.value == "builtins.frozenset"
                )
            )
        elif name == "OBJ":
            items = self.pop_mark()
            if not items:
                raise WeightsFileError("OBJ without a class")
            push(self.call(items[0], _Node("tuple", items=items[1:])))
        elif name == "BUILD":
            state = self.pop(1)[0]
            self.build(self.top(), state)
        elif name in ("PERSID", "BINPERSID"):
            pid = _atom(arg) if name == "PERSID" else self.pop(1)[0]
            if not pid.plain:  # torch looks up its storage keys in dicts
                raise WeightsFileError(
                    "a persistent id other than key-safe atoms, globals and tuples of them"
                )
            self.result.persistent_ids.append(pid)
            push(_Node("other"))
        elif name in ("EXT1", "EXT2", "EXT4", "BYTEARRAY8", "NEXT_BUFFER"):
            push(
                _Node("other")
            )  # objects the dry run need not know (EXT: refused here, unsupported by torch)
        elif name == "READONLY_BUFFER":
            self.top()
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            push(_atom({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name]))
        elif name in ("PROTO", "FRAME"):
            pass
        elif name == "STOP":
            self.pop(1)
        elif name in _LITERALS:
            push(_atom(arg))
        else:
            raise WeightsFileError(f"opcode {name}")  # none left: a new pickle protocol's opcode


_TUPLE_SIZES = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_LITERALS = frozenset(
    {
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "UNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "FLOAT",
        "BINFLOAT",
    }
)


def scan_pickle(
    file, refused: FrozenSet[str] = frozenset(), identity_hashed: FrozenSet[str] = frozenset()
) -> ScanResult:
    """A dry run over one pickle, read from `file` (bytes or a binary file, left just past its
    STOP): refuses the `refused` opcodes and what the module's docstring lists. Objects built by
    calling a global in `identity_hashed` (placeholders hashed by identity) may be keys."""
    scan = _Scan(refused, identity_hashed)
    size = len(file) if isinstance(file, (bytes, bytearray)) else None
    try:
        for count, (opcode, arg, position) in enumerate(pickletools.genops(file), 1):
            if opcode.name == "FRAME" and size is not None and position + 9 + arg > size:
                raise WeightsFileError(
                    "a pickle frame longer than the file"
                )  # Python's unpickler would not mind
            scan.step(opcode.name, arg, count)
    except WeightsFileError:
        raise
    except Exception as e:  # genops on a damaged pickle: ValueError, UnicodeDecodeError, ...
        raise WeightsFileError(f"not a valid pickle ({_describe(e)})") from None
    return scan.result


def _describe(error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:300] + "..."


# ---------------------------------------------------------------------------------------------
# The stand-ins.


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


class _NDArrayName(_Sealed):
    """numpy.ndarray as _reconstruct's first argument: neither callable nor a class."""

    __slots__ = ()


_NDARRAY = _NDArrayName()


def _is_int(x, *allowed) -> bool:
    return type(x) is int and (not allowed or x in allowed)


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


class _DType:
    """numpy.dtype(spec, align, copy) and its BUILD state, each checked as the file sets it:
    only what numpy writes for a bool / integer / float dtype (then numpy builds the same)."""

    __slots__ = ("dtype", "state", "used")

    def __init__(self, spec=None, *flags):
        spec = spec.decode("latin1") if isinstance(spec, bytes) else spec
        ok = isinstance(spec, str) and len(spec) <= 4 and spec.isascii() and spec.isalnum()
        dtype = np.dtype(spec) if ok else None
        if dtype is None or dtype.kind not in "biuf" or dtype.itemsize > 8:
            shown = (
                repr(spec)
                if ok or (isinstance(spec, str) and len(spec) <= 16)
                else type(spec).__name__
            )
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


def _array_from_bytes(
    shape, dtype: "_DType", fortran: bool, raw, budget: _Budget, raw_types=(bytes, bytearray)
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
        if not (
            _is_int(version, 0, 1) and type(fortran) in (bool, int) and -(2**31) <= fortran < 2**31
        ):
            raise WeightsFileError(
                "an array whose pickled version or Fortran flag numpy would not read"
            )
        self.array = _array_from_bytes(
            shape, dtype, fortran != 0, raw, self.budget, raw_types=bytes
        )


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
        raise WeightsFileError("the file sets the state of an OrderedDict")


def _stand_ins(budget: _Budget) -> dict:
    """The globals a weights file may name, as stand-ins paying into `budget`."""

    def ordered_dict(*args):
        if len(args) > 1 or (
            args
            and not (
                isinstance(args[0], list)
                and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in args[0])
            )
        ):
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


_CONTAINERS = (tuple, list, dict, _Array, set, frozenset, bytearray)


def _no_container_again(load):
    """A memo-fetching opcode (GET, BINGET, LONG_BINGET, DUP) that refuses to fetch a container:
    shared containers are how a small file builds an exponentially large structure."""

    def checked(self):
        load(self)
        if isinstance(self.stack[-1], _CONTAINERS):
            raise WeightsFileError("the file references a container twice")

    return checked


class _SafeUnpickler(pickle._Unpickler):
    dispatch = dict(pickle._Unpickler.dispatch)
    for _code in (pickle.GET, pickle.BINGET, pickle.LONG_BINGET, pickle.DUP):
        dispatch[_code[0]] = _no_container_again(pickle._Unpickler.dispatch[_code[0]])

    def __init__(self, file, budget: _Budget):
        super().__init__(file, encoding="latin1")
        self.stand_ins = _stand_ins(budget)

    def find_class(self, module, name):
        shown = f"{module[:100]}.{name[:100]}"
        if self.proto < 3:  # Python 2 names, mapped as pickle maps them (and only then)
            module, name = _mapped(module, name)
        found = self.stand_ins.get((module, name))
        if found is None:
            raise WeightsFileError(
                f"it names {shown}; model-zoo .pkl weights hold only numpy arrays, numbers "
                f"and strings (set {ALLOW_UNSAFE_PICKLE_ENV}=1 to load a file you trust with "
                "plain pickle)"
            )
        return found


_ATOMS = (str, bytes, int, float, bool, type(None), np.generic)


def _resolve(obj, depth: int = 0):
    """obj (a tree: no container is shared) with every pickled array rebuilt; only dicts, lists,
    tuples and _ATOMS may hold them (anything else, e.g. a leftover stand-in: an error)."""
    if isinstance(obj, _ATOMS):
        return obj
    if depth > _MAX_DEPTH:
        raise WeightsFileError(f"nesting deeper than {_MAX_DEPTH}")
    if isinstance(obj, _Array) and obj.array is not None:
        return obj.array
    if isinstance(obj, dict):  # dict.items: not a method the file could have set on the instance
        pairs = [(_resolve(k, depth + 1), _resolve(v, depth + 1)) for k, v in dict.items(obj)]
        return OrderedDict(pairs) if isinstance(obj, OrderedDict) else dict(pairs)
    if type(obj) in (list, tuple):
        return type(obj)(_resolve(v, depth + 1) for v in obj)
    raise WeightsFileError(f"an object of type {type(obj).__name__}")


def load_pickle_weights(f):
    """pickle.load(f, encoding="latin1") for weights files, without running anything they name
    (plain pickle.load when D2EXT_ALLOW_UNSAFE_PICKLE=1). Raises WeightsFileError for any file it
    refuses or cannot read (see the module's docstring)."""
    if unsafe_pickle_allowed():
        return pickle.load(f, encoding="latin1")
    data = f.read()
    scan_pickle(data, refused=_REFUSED_OPCODES)
    try:
        return _resolve(_SafeUnpickler(io.BytesIO(data), _Budget(2 * len(data))).load())
    except WeightsFileError:
        raise
    except Exception as e:  # the unpickler on a damaged file: EOFError, TypeError, KeyError, ...
        raise WeightsFileError(_describe(e)) from None
