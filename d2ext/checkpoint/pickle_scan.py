"""A dry run over a pickle's opcodes, run before anything is unpickled: by load_pickle_weights
(d2ext/checkpoint/safe_pickle.py) on model-zoo ``.pkl`` files, and by load_weights_only
(d2ext/checkpoint/weights_only.py) on the pickles torch will unpickle.

``scan_pickle`` builds and runs nothing: it follows the unpickler's stack, MARKs and memo, and ends
with a ``WeightsFileError`` (d2ext/errors.py) that says why on a pickle with any of:

- an opcode the caller refuses (``refused``) or one this module does not know (a newer protocol's);
  opcodes that take more from the stack than it holds or close a MARK that is not open; bytes that
  are not a pickle (pickletools cannot read them);
- a memo index read before it is written, or written larger than the number of opcodes read so
  far; a frame longer than the file, when the file is given as bytes (Python's unpickler reads
  them, pickle.load does not);
- tuples nested more than ``MAX_TUPLE_DEPTH`` (32) deep, and MARKs open more than
  ``MAX_NESTING`` (200) deep. Hashing a tuple recurses in C once per level without a limit: a 1 MB
  file of nested tuples used as a dict key crashed the process (SIGSEGV);
- a tuple whose hash would visit more than ``MAX_HASHED_ITEMS`` (2**20) items, or more than the
  pickle's opcodes read so far if that is larger: only tuples that share tuples get there, and
  exponentially (t = (t, t) 31 times over, 200 bytes, hashes 2**31 tuples);
- any dict key or set item that is not a str, bytes, None, bool, an int of magnitude below
  ``sys.hash_info.modulus`` (2**61 - 1), a global, or an object built by calling a global in
  ``identity_hashed`` (placeholders, hashed by identity), ``_codecs.encode`` or ``bytes``. str and
  bytes hashes are salted per process (SipHash); such ints hash to themselves, so no two share a
  hash (but -1 and -2). Every other key (a float, a larger int, a tuple, an object the file builds)
  could be one of many the file chose to share one hash, which makes building the dict quadratic
  (519 KB of int keys took pickle.load 10 s). The dry run tracks memo references and follows the
  keys that DICT, SETITEM(S), ADDITEMS, FROZENSET, ``dict(pairs)``, ``OrderedDict(pairs)``,
  ``set(items)``, ``frozenset(items)`` and ``Counter(items)`` hash, and what BUILD on an
  OrderedDict / Counter adds;
- for a pickle that must build a tree (``tree``: model-zoo ``.pkl`` weights), a memo reference
  (GET) or DUP that fetches a container again (anything but strings, numbers, globals and what
  numpy's dtype and scalar, ``_codecs.encode`` and ``bytes`` build), and a second PROTO opcode;
- a persistent id (torch's storage key, which torch looks up in dicts) that is not a key-safe atom
  (as above), a global, or a tuple of them.

What it finds is returned: the pickle's persistent ids, as the dry run's nodes, and the globals
it names.
"""

from __future__ import annotations

import _compat_pickle
import pickletools
import sys
from typing import FrozenSet, List, Set, Tuple

from d2ext.errors import WeightsFileError

MAX_TUPLE_DEPTH = 32
MAX_NESTING = 200
MAX_HASHED_ITEMS = 1 << 20


class ScanResult:
    """What a dry run found: the pickle's persistent ids (nodes: torch's storage references) and
    the globals it names, as (module, name) after Python 2 names are mapped."""

    def __init__(self):
        self.persistent_ids: List[_Node] = []
        self.globals: Set[Tuple[str, str]] = set()
        self.protocol = 0  # the PROTO opcode's; Python 2 names are mapped below protocol 3


def scan_pickle(
    file,
    refused: FrozenSet[str] = frozenset(),
    identity_hashed: FrozenSet[str] = frozenset(),
    tree: bool = False,
) -> ScanResult:
    """A dry run over one pickle, read from `file` (bytes or a binary file, left just past its
    STOP): refuses the `refused` opcodes and what the module's docstring lists. Objects built by
    calling a global in `identity_hashed` (placeholders hashed by identity) may be keys. `tree`:
    the pickle must build a tree (see ``fetched``) with one PROTO opcode at most."""
    scan = _Scan(refused, identity_hashed, tree)
    size = len(file) if isinstance(file, (bytes, bytearray)) else None
    try:
        for count, (opcode, arg, position) in enumerate(pickletools.genops(file), 1):
            # Python's (pure-Python) unpickler reads such a frame, pickle.load does not.
            if opcode.name == "FRAME" and size is not None and position + 9 + arg > size:
                raise WeightsFileError("a pickle frame longer than the file")
            scan.step(opcode.name, arg, count)
    except WeightsFileError:
        raise
    except Exception as e:  # genops on a damaged pickle: ValueError, UnicodeDecodeError, ...
        raise WeightsFileError(f"not a valid pickle ({describe(e)})") from None
    return scan.result


class _Scan:
    """The unpickler's stack and memo, as _Nodes, over one pickle's opcodes."""

    def __init__(self, refused: FrozenSet[str], identity_hashed: FrozenSet[str], tree: bool):
        self.refused = refused
        self.tree = tree
        self.identity_hashed = identity_hashed | _SALTED_CALLS
        self.stack: List[_Node] = []
        self.marks: List[int] = []
        self.memo = {}
        self.count = 0  # opcodes read so far
        self.result = ScanResult()

    def step(self, name: str, arg, count: int):
        """Follows one opcode, the `count`th, with its argument `arg`."""
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
            push(self.fetched(self.top()))
        elif name == "TUPLE":
            push(self.tuple_of(self.pop_mark()))
        elif name in _TUPLE_SIZES:
            push(self.tuple_of(self.pop(_TUPLE_SIZES[name])))
        elif name in ("EMPTY_LIST", "LIST"):
            push(_Node("list", items=self.pop_mark() if name == "LIST" else []))
        elif name in ("EMPTY_DICT", "DICT", "EMPTY_SET"):
            items = self.pop_mark() if name == "DICT" else []
            self.check_keys(items[::2])
            push(_Node("set" if name == "EMPTY_SET" else "dict"))
        elif name == "FROZENSET":
            items = self.pop_mark()
            self.check_keys(items)
            push(self.tuple_of(items, "set"))
        elif name in ("APPEND", "APPENDS"):
            items = self.pop_mark() if name == "APPENDS" else self.pop(1)
            target = self.top()
            if target.kind == "list":
                target.items.extend(items)
        elif name in ("SETITEM", "SETITEMS", "ADDITEMS"):
            items = self.pop(2) if name == "SETITEM" else self.pop_mark()
            self.check_keys(items if name == "ADDITEMS" else items[::2])
            self.top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise WeightsFileError(f"memo index {arg} read before it is written")
            push(self.fetched(self.memo[arg]))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            index = len(self.memo) if name == "MEMOIZE" else int(arg)
            if index < 0 or index > count:
                raise WeightsFileError(f"memo index {arg}")
            self.memo[index] = self.top()
        elif name in ("GLOBAL", "STACK_GLOBAL", "INST"):
            push(self.named_global(name, arg))
        elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
            callee, args = self.pop(3)[:2] if name == "NEWOBJ_EX" else self.pop(2)
            # cls.__new__ fills nothing, but frozenset's (immutable: filled when made).
            hashes = name == "REDUCE" or callee.value == "builtins.frozenset"
            push(self.call(callee, args, hashes=hashes))
        elif name == "OBJ":
            items = self.pop_mark()
            if not items:
                raise WeightsFileError("OBJ without a class")
            push(self.call(items[0], _Node("tuple", items=items[1:])))
        elif name == "BUILD":
            state = self.pop(1)[0]
            self.build(self.top(), state)
        elif name in ("PERSID", "BINPERSID"):
            self.persistent_id(_atom(arg) if name == "PERSID" else self.pop(1)[0])
            push(_Node("other"))
        elif name in ("EXT1", "EXT2", "EXT4", "BYTEARRAY8", "NEXT_BUFFER"):
            # Objects the dry run need not know (EXT: refused here, unsupported by torch).
            push(_Node("other"))
        elif name == "READONLY_BUFFER":
            self.top()
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            push(_atom({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name]))
        elif name == "PROTO":
            if self.tree and count > 1:
                raise WeightsFileError("a PROTO opcode after the first opcode")
            self.result.protocol = arg
        elif name == "FRAME":
            pass
        elif name == "STOP":
            self.pop(1)
        elif name in _LITERALS:
            push(_atom(arg))
        else:  # none left: a new pickle protocol's opcode
            raise WeightsFileError(f"opcode {name}")

    def fetched(self, node: _Node) -> _Node:
        """A memo reference (GET) or DUP of node. In a `tree`, only strings, numbers, globals and
        what numpy.dtype, numpy's scalar, _codecs.encode and bytes build may be fetched again:
        shared containers are how a small file builds an exponentially large structure."""
        if self.tree and not (
            node.kind in ("atom", "global")
            or (node.kind == "call" and node.value in _NOT_CONTAINERS)
        ):
            raise WeightsFileError("the file references a container twice")
        return node

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

    # What the opcodes build.

    def tuple_of(self, items: List[_Node], kind: str = "tuple") -> _Node:
        depth = 1 + max((item.depth for item in items), default=0)
        if depth > MAX_TUPLE_DEPTH:
            raise WeightsFileError(
                f"tuples nested more than {MAX_TUPLE_DEPTH} deep (hashing them could crash)"
            )
        # Without shared tuples, hashing one visits at most as many items as there were opcodes;
        # sharing makes that exponential (t = (t, t), 32 times over).
        size = len(items) + sum(item.size for item in items)
        bound = max(MAX_HASHED_ITEMS, self.count)
        if size > bound:
            raise WeightsFileError(f"a tuple whose hash would visit more than {bound} items")
        plain = all(item.plain for item in items)
        return _Node(kind, items=items, depth=depth, size=size, plain=plain)

    def named_global(self, name: str, arg) -> _Node:
        """The global a GLOBAL or STACK_GLOBAL opcode names; for INST, the global called with the
        items above the last MARK."""
        if name == "STACK_GLOBAL":
            module, qualname = (n.value if n.kind == "atom" else None for n in self.pop(2))
        else:
            module, _, qualname = arg.partition(" ")
        named = isinstance(module, str) and isinstance(qualname, str)
        full = None
        if named:
            mapped = mapped_name(module, qualname)
            self.result.globals.add(mapped)
            full = ".".join(mapped)
        callee = _Node("global", full, plain=True)
        if name == "INST":
            return self.call(callee, _Node("tuple", items=self.pop_mark()))
        return callee

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
        if spread:
            like = self.tuple_of(args.items)
        else:
            like = _Node("tuple", depth=args.depth + 1, size=args.size + 1)
        return _Node("call", name, depth=like.depth, size=like.size)

    def build(self, target: _Node, state: _Node):
        if target.kind == "call" and target.value in _UPDATES_DICT:
            self.check_iterable(state, pairs=True)
            if state.kind == "tuple" and len(state.items) == 2:  # (state, slotstate)
                self.check_iterable(state.items[0], pairs=True)

    def persistent_id(self, pid: _Node):
        if not pid.plain:  # torch looks up its storage keys in dicts
            raise WeightsFileError(
                "a persistent id other than key-safe atoms, globals and tuples of them"
            )
        self.result.persistent_ids.append(pid)

    # What may be hashed.

    def check_keys(self, keys: List[_Node]):
        for key in keys:
            self.check_key(key)

    def check_key(self, node: _Node):
        if node.plain and node.kind in ("atom", "global"):
            return
        if node.kind == "call" and node.value in self.identity_hashed:
            return  # a d2ext placeholder (hashed by identity), or str / bytes
        if node.kind == "atom":
            value = node.value
            if type(value) is int:
                what = f"an int of {value.bit_length()} bits"
            else:
                what = f"a {type(value).__name__}"
        elif node.kind == "call":
            what = f"an object built by {node.value}"
        else:
            what = f"a {node.kind}"
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


class _Node:
    """What the dry run knows of one object the unpickler would build: its kind ("atom", "tuple",
    "list", "dict", "set", "global", "call", "other"), its value (an atom's, a global's or a
    called global's name), the items of a tuple or list; for what may be a tuple, how deep tuples
    nest in it and how many items hashing it visits (`size`, shared tuples counted each time);
    whether it is `plain`: a key-safe atom, a global, or a tuple of plain items."""

    __slots__ = ("kind", "value", "items", "depth", "size", "plain")

    def __init__(self, kind, value=None, items=None, depth=0, size=0, plain=False):
        self.kind = kind
        self.value = value
        self.items = items
        self.depth = depth
        self.size = size
        self.plain = plain


def _atom(value) -> _Node:
    # Only short strings matter (global names, storage ids): keep no copy of data.
    if isinstance(value, (str, bytes)) and len(value) > 256:
        value = value[:0]
    # Hashes the file cannot choose: salted (str, bytes), or an int's own value (distinct ints,
    # distinct hashes).
    plain = isinstance(value, _KEY_ATOMS) or (
        type(value) is int and abs(value) < sys.hash_info.modulus
    )
    return _Node("atom", value, plain=plain)


_KEY_ATOMS = (str, bytes, bool, type(None))
# Called with an iterable, these hash each of its items / the first of each of its pairs.
_HASHES_ITEMS = frozenset({"builtins.set", "builtins.frozenset", "collections.Counter"})
_HASHES_PAIRS = frozenset({"builtins.dict", "collections.OrderedDict"})
# These return str or bytes, whose hashes are salted too (how protocol-2 pickles store bytes).
_SALTED_CALLS = frozenset({"_codecs.encode", "builtins.bytes"})
# BUILD on these updates their __dict__ from the state (torch's weights-only unpickler).
_UPDATES_DICT = frozenset({"collections.OrderedDict", "collections.Counter"})

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


# Calls that build no container (numpy's dtype and scalar, bytes): a `tree` may share them.
_NOT_CONTAINERS = frozenset(
    {
        "numpy.dtype",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "_codecs.encode",
        "builtins.bytes",
    }
)


def mapped_name(module: str, name: str):
    """(module, name) as unpicklers resolve Python 2 names (torch's always, Python's below
    protocol 3)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def describe(error: Exception) -> str:
    """An error's type and message for a WeightsFileError, cut after 300 characters."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:300] + "..."
