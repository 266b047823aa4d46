"""Model-zoo .pkl weights load without running the file (d2ext/checkpoint/safe_pickle.py):
numeric numpy arrays, scalars and plain data are rebuilt as pickle.load would; anything else the
file names is refused, and crafted files (nested-tuple keys, keys sharing one hash, array fields
numpy reads otherwise) end with a WeightsFileError, not a crash, a hang or a wrong array."""

import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from d2ext.checkpoint.pickle_scan import MAX_TUPLE_DEPTH, scan_pickle
from d2ext.checkpoint.safe_pickle import (
    ALLOW_UNSAFE_PICKLE_ENV,
    _array_from_bytes,
    _Budget,
    _DType,
    load_pickle_weights,
)
from d2ext.errors import WeightsFileError


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def dump(tmp_path, data, protocol=2, name="w.pkl"):
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return str(path)


def load(path):
    with open(path, "rb") as f:
        return load_pickle_weights(f)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numeric_arrays_scalars_and_plain_data_round_trip(tmp_path, protocol):
    data = {
        "model": OrderedDict(
            w=np.arange(12, dtype=np.float32).reshape(3, 4),
            fortran=np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
            big_endian=np.arange(5, dtype=">i4"),
            flags=np.array([True, False]),
            empty=np.zeros((0, 3), np.uint8),
        ),
        "__author__": "Caffe2",
        "iter": np.int64(7),
        "lr": np.float32(0.5),
        "names": ["a", ("b", 1.5)],
    }
    loaded = load(dump(tmp_path, data, protocol))
    for k, v in data["model"].items():  # in native byte order (torch.from_numpy needs it)
        assert loaded["model"][k].dtype == v.dtype.newbyteorder("=") and np.array_equal(
            loaded["model"][k], v
        ), k
    assert isinstance(loaded["model"], OrderedDict) and list(loaded["model"]) == list(data["model"])
    assert (
        loaded["iter"] == 7 and loaded["iter"].dtype == np.int64 and loaded["lr"] == np.float32(0.5)
    )
    assert loaded["names"] == ["a", ("b", 1.5)]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_arrays_making_up_most_of_the_file_load(protocol):
    """Python 3's protocol 0-2 pickles hold an array's bytes as _codecs.encode(<latin1 str>): the
    bytes are made twice (encoded, then copied into the array): within the budget, twice the
    file."""
    weights = {"w": np.arange(250_000, dtype=np.float32), "b": np.ones(1000, np.uint8)}
    loaded = load_bytes(pickle.dumps(weights, protocol=protocol))
    assert all(np.array_equal(loaded[k], v) for k, v in weights.items())


def test_python2_string_data_read_as_latin1():
    """Python 2 pickles hold array bytes as str; encoding="latin1" gives them back as such."""
    raw = np.array([1.0, -2.5], "<f4").tobytes().decode("latin1")
    dtype = _DType("f4", False, True)
    dtype.__setstate__((3, "<", None, None, None, -1, -1, 0))
    assert np.array_equal(_array_from_bytes((2,), dtype, False, raw, _Budget(100)), [1.0, -2.5])


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"model": {"w": np.array([1, 2], dtype=object)}}, "is not a bool, integer or float type"),
        (
            {"model": {"w": np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])}},
            "is not a bool, integer or float type",
        ),
        ({"model": {"w": np.array(["x"])}}, "is not a bool, integer or float type"),
        (
            {"model": {"w": np.zeros(2, np.float128)}},
            "is not a bool, integer or float type of <= 64 bits",
        ),
    ],
)
@pytest.mark.parametrize("protocol", [2, 4])
def test_object_structured_and_string_arrays_are_refused(tmp_path, bad, message, protocol):
    with pytest.raises(pickle.UnpicklingError, match=message):
        load(dump(tmp_path, bad, protocol))


def test_array_data_must_match_its_shape_and_the_budget():
    dtype = _DType("f4", False, True)
    for shape in [(3,), (2**40, 2**40), (-1, -2), (1,) * 33, (2**70,)]:
        with pytest.raises(pickle.UnpicklingError, match="bytes|shape"):
            _array_from_bytes(shape, dtype, False, b"\0" * 8, _Budget(100))
    budget = _Budget(12)
    _array_from_bytes((2,), dtype, False, b"\0" * 8, budget)
    with pytest.raises(pickle.UnpicklingError, match="more than twice its own size"):
        _array_from_bytes((2,), dtype, False, b"\0" * 8, budget)


def load_bytes(data):
    import io

    return load_pickle_weights(io.BytesIO(data))


@pytest.mark.parametrize(
    "data,message",
    [
        # numpy.ndarray called by the file (shape, dtype, buffer and strides would be its choice).
        (b"\x80\x02cnumpy\nndarray\n(K\x02tR.", "not callable"),
        (b"\x80\x02cnumpy\nndarray\n)\x81.", "must be a type"),
        (b"(inumpy\nndarray\n.", "opcode INST"),
        # The extension registry (skips find_class when cached), a 2**32 memo index.
        (b"\x80\x02\x82\xf0.", "opcode EXT1"),
        (b"\x80\x02Nr\xff\xff\xff\xff.", "memo index 4294967295"),
        # BUILD on an OrderedDict (its items() would be the file's) and on a stand-in function.
        (
            b"\x80\x02ccollections\nOrderedDict\n)R}X\x05\x00\x00\x00itemsK\x01sb.",
            "sets the state of an OrderedDict",
        ),
        (b"\x80\x02c_codecs\nencode\n}b.", "sets the state of _Call"),
        (b"\x80\x02ccollections\nOrderedDict\nK\x05\x85R.", "OrderedDict with arguments"),
        (b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.", "bytes\\(\\) with arguments"),
    ],
)
def test_crafted_files_are_refused(data, message):
    with pytest.raises((pickle.UnpicklingError, TypeError), match=message):
        load_bytes(data)


def test_sets_and_shared_containers_are_refused_quickly():
    """A file could reference one container many times for 2 bytes each (2**40 paths here, or
    a dict key whose hash takes 2**30 steps): only strings, numbers and dtypes may be shared."""
    import time

    with pytest.raises(pickle.UnpicklingError, match="opcode EMPTY_SET"):
        load_bytes(pickle.dumps({"w": {1, 2}}, protocol=4))
    loop = []
    loop.append(loop)
    x = [np.arange(3, dtype=np.float32)]
    for _ in range(40):
        x = [x, x]
    key = (1, 2)
    for _ in range(
        30
    ):  # (as a dict key, hashing it would take 2**30 steps; deeper is refused as such)
        key = (key, key)
    start = time.time()
    # The key shares its tuples through the memo: refused as shared before its hash is counted
    # (scan_pickle's hash bound guards torch's files, tests/engine/test_weights_only.py).
    for shared in (loop, x, [key]):
        with pytest.raises(pickle.UnpicklingError, match="references a container twice"):
            load_bytes(pickle.dumps(shared, protocol=4))
    assert time.time() - start < 5


def test_python2_names_are_mapped_below_protocol_3_only():
    """As pickle.load: __builtin__.bytes is builtins.bytes in a protocol-2 (or 0) file, an unknown
    module in a protocol-3 one; a second PROTO (which would change that midway) is refused."""
    assert load_bytes(b"\x80\x02c__builtin__\nbytes\n)R.") == b""
    assert load_bytes(b"c__builtin__\nbytes\n)R.") == b""  # no PROTO: protocol 0
    with pytest.raises(pickle.UnpicklingError, match="it names __builtin__.bytes"):
        load_bytes(b"\x80\x03c__builtin__\nbytes\n)R.")
    with pytest.raises(pickle.UnpicklingError, match="a PROTO opcode after the first"):
        load_bytes(b"\x80\x02\x80\x03c__builtin__\nbytes\n)R.")


def test_numbers_strings_and_dtypes_may_be_shared():
    """Only containers are refused when the memo hands them out again."""
    shared = np.dtype("f4")
    data = {"a": np.zeros(2, shared), "b": np.ones(3, shared), "s": ["x" * 9] * 2}
    loaded = load_bytes(pickle.dumps(data, protocol=2))
    assert loaded["s"] == data["s"] and loaded["b"].dtype == shared
    np.testing.assert_array_equal(loaded["b"], data["b"])


def test_one_buffer_used_many_times_is_paid_for():
    big = "x" * 100_000  # one memoised str, encoded to bytes by 50 calls: 5 MB from a ~100 kB file
    # A protocol-2 file whose 50 entries are _codecs.encode(<the same memoised str>, "latin1").
    entry = b"c_codecs\nencode\nh\x01X\x06\x00\x00\x00latin1\x86R"
    head = b"\x80\x02]X" + len(big).to_bytes(4, "little") + big.encode() + b"q\x01("
    crafted = head + entry * 50 + b"e."
    with pytest.raises(pickle.UnpicklingError, match="more than twice its own size"):
        load_bytes(crafted)


def test_a_code_running_global_is_refused_and_named(tmp_path):
    marker = tmp_path / "ran"
    path = dump(tmp_path, {"model": {"w": np.ones(2)}, "evil": _CreatesFile(str(marker))})
    with pytest.raises(
        pickle.UnpicklingError, match=r"it names io.open; .*D2EXT_ALLOW_UNSAFE_PICKLE=1"
    ):
        load(path)
    assert not marker.exists()


def test_checkpointer_loads_a_model_zoo_pkl_and_names_a_bad_one(tmp_path, monkeypatch):
    from d2ext.checkpoint import Checkpointer
    from d2ext.checkpoint.safe_resume import InvalidCheckpointError

    model = torch.nn.Linear(2, 2)
    state = {k: np.full(tuple(v.shape), 3.0, np.float32) for k, v in model.state_dict().items()}
    Checkpointer(model).load(dump(tmp_path, {"model": state, "__author__": "Detectron2 model zoo"}))
    assert torch.equal(model.weight, torch.full((2, 2), 3.0))
    marker = tmp_path / "ran"
    bad = dump(
        tmp_path,
        {"model": state, "__author__": "x", "evil": _CreatesFile(str(marker))},
        name="bad.pkl",
    )
    with pytest.raises(
        InvalidCheckpointError, match=f"{bad} is not a valid weights file: .*it names io.open"
    ):
        Checkpointer(model).load(bad)
    assert not marker.exists()
    not_a_dict = dump(tmp_path, [1, 2], name="list.pkl")
    with pytest.raises(
        InvalidCheckpointError,
        match="list.pkl is not a valid weights file: .*holds no dict of weights by name",
    ):
        Checkpointer(model).load(not_a_dict)
    # The documented opt-in: Detectron2's plain pickle.load (the file runs).
    monkeypatch.setenv(ALLOW_UNSAFE_PICKLE_ENV, "1")
    Checkpointer(model).load(bad)
    assert marker.exists()


# --- Crafted inputs from the security review: each ends with a WeightsFileError. -------------


class _Reduced:
    """Pickles as the given __reduce__ value: numpy's own reductions with one field changed."""

    def __init__(self, *reduced):
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


def _long1(value):
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _nested_tuple_key(depth):
    """{(((None,),),...): None}: TUPLE1 `depth` times, as a dict key (1 MB for depth 10**6)."""
    return b"\x80\x02}N" + b"\x85" * depth + b"Ns."


def test_a_deeply_nested_tuple_key_is_refused_not_a_crash(tmp_path):
    """Hashing 10**6 nested tuples recursed in C until the process died (SIGSEGV): run where a
    crash is a failed assertion, not a dead test runner."""
    import subprocess
    import sys

    path = tmp_path / "deep.pkl"
    path.write_bytes(_nested_tuple_key(10**6))
    code = (
        "import sys\n"
        "from d2ext.checkpoint.safe_pickle import load_pickle_weights, WeightsFileError\n"
        "try:\n    load_pickle_weights(open(sys.argv[1], 'rb'))\n"
        "except WeightsFileError as e:\n    print('refused:', e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert f"refused: tuples nested more than {MAX_TUPLE_DEPTH} deep" in result.stdout


def test_tuples_nest_up_to_the_bound():
    value = None
    for _ in range(MAX_TUPLE_DEPTH):
        value = (value,)
    assert load_bytes(pickle.dumps({"x": value}, protocol=2)) == {"x": value}
    with pytest.raises(WeightsFileError, match="tuples nested more than 32 deep"):
        load_bytes(pickle.dumps({"x": (value,)}, protocol=2))


def test_keys_sharing_one_hash_are_refused_in_bounded_time():
    """40,000 int keys k * (2**61 - 1) all hash to 0: pickle.load took 10 s on this 519 KB file."""
    import time

    modulus = 2**61 - 1
    flood = b"\x80\x02}(" + b"".join(_long1(k * modulus) + b"N" for k in range(1, 40000)) + b"u."
    start = time.time()
    with pytest.raises(WeightsFileError, match="a dict key or set item that is an int of 61 bits"):
        load_bytes(flood)
    assert time.time() - start < 2


def test_keys_whose_hashes_the_file_cannot_choose_load():
    """str / bytes hashes are salted per process; ints below 2**61 - 1 hash to themselves."""
    data = {"a": 1, b"b": 2, None: 3, True: 4, -(2**61 - 2): 5, 2**61 - 2: 6}
    data.update({k << 40: k for k in range(2000)})  # distinct hashes sharing their low 40 bits
    assert load_bytes(pickle.dumps(data, protocol=2)) == data


@pytest.mark.parametrize(
    "key,what",
    [
        (1.5, "a float"),
        ((1, 2), "a tuple"),
        (2**61 - 1, "an int of 61 bits"),
        (-(2**64), "an int of 65 bits"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_keys_whose_hashes_the_file_can_choose_are_refused(key, what, protocol):
    with pytest.raises(WeightsFileError, match=f"a dict key or set item that is {what}"):
        load_bytes(pickle.dumps({"model": {key: 1}}, protocol=protocol))


def test_keys_reached_through_ordered_dict_pairs_and_memo_are_checked():
    # OrderedDict([[1.5, None]]): the pairs' first items are hashed by the call.
    with pytest.raises(WeightsFileError, match="is a float"):
        load_bytes(b"\x80\x02ccollections\nOrderedDict\n]]G?\xf8\x00\x00\x00\x00\x00\x00aNaa\x85R.")
    # The same list (memo 1) filled after it was stored, then passed to OrderedDict: a weights
    # file may not fetch a list again; the key check follows it where a file may.
    memo = (
        b"\x80\x02ccollections\nOrderedDict\n]q\x01]G?\xf8\x00\x00\x00\x00\x00\x00aNaa0h\x01\x85R."
    )
    with pytest.raises(WeightsFileError, match="references a container twice"):
        load_bytes(memo)
    with pytest.raises(WeightsFileError, match="is a float"):
        scan_pickle(memo)


def _array_pickle(array, state=None, dtype=None, reconstruct_args=None, protocol=2):
    """numpy's protocol-2 reduction of `array`, its state, dtype or _reconstruct arguments
    replaced."""
    func, args, real_state = array.__reduce__()
    version, shape, real_dtype, fortran, raw = real_state
    state = state or (version, shape, dtype or real_dtype, fortran, raw)
    return pickle.dumps({"w": _Reduced(func, reconstruct_args or args, state)}, protocol=protocol)


def _dtype(spec="f4", flags=(False, True), state=(3, "<", None, None, None, -1, -1, 0)):
    return _Reduced(np.dtype, (spec, *flags), state)


@pytest.mark.parametrize("flag", [1, 2, -1, True])
def test_an_int_fortran_flag_is_read_as_numpy_reads_it(flag):
    """numpy reads is_fortran as a C int: any nonzero int is Fortran order (it was read as C)."""
    array = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    data = _array_pickle(array, state=(1, (2, 3), array.dtype, flag, array.tobytes(order="F")))
    loaded, reference = load_bytes(data)["w"], pickle.loads(data)["w"]
    assert (
        np.array_equal(loaded, reference)
        and loaded.flags.f_contiguous
        and reference.flags.f_contiguous
    )


def test_protocol_5_order_is_read_as_numpy_reads_it_or_refused():
    from numpy.core.numeric import _frombuffer

    raw = np.arange(6, dtype=np.float32).tobytes()
    for order, fortran in [("C", False), ("F", True)]:
        data = pickle.dumps(_Reduced(_frombuffer, (raw, np.dtype("f4"), (2, 3), order)), protocol=5)
        loaded, reference = load_bytes(data), pickle.loads(data)
        assert np.array_equal(loaded, reference)
        assert loaded.flags.f_contiguous == fortran == reference.flags.f_contiguous
    for order in [
        "f",
        "A",
        b"F",
        None,
    ]:  # numpy reads "f" as Fortran order, "A" / None as C: refused
        data = pickle.dumps(_Reduced(_frombuffer, (raw, np.dtype("f4"), (2, 3), order)), protocol=5)
        with pytest.raises(WeightsFileError, match="order is not 'C' or 'F'"):
            load_bytes(data)


@pytest.mark.parametrize(
    "change,message",
    [
        (
            dict(state=(1, (2,), np.dtype("f4"), 1.0, b"\0" * 8)),
            "Fortran flag numpy would not read",
        ),
        (dict(state=(2, (2,), np.dtype("f4"), False, b"\0" * 8)), "version or Fortran flag"),
        (dict(state=(1, (2,), np.dtype("f4"), False, bytearray(8)), protocol=5), "not raw bytes"),
        (
            dict(dtype=_dtype(state=(3, "x", None, None, None, -1, -1, 0))),
            "a state numpy does not write",
        ),
        (
            dict(dtype=_dtype(state=(3, "<", (np.dtype("f4"), (2,)), None, None, -1, -1, 0))),
            "a state numpy does not",
        ),
        (
            dict(dtype=_dtype(state=(3, "<", None, None, None, 8, 8, 0))),
            "a state numpy does not write",
        ),
        (
            dict(dtype=_dtype(state=(3, "<", None, None, None, -1, -1, 16))),
            "a state numpy does not write",
        ),
        (dict(dtype=_dtype(flags=("x", 1))), "arguments numpy does not write"),
        (dict(dtype=_dtype(flags=(False,))), "arguments numpy does not write"),
        (
            dict(reconstruct_args=(np.ndarray, (2**40,), b"b")),
            "_reconstruct with arguments other than",
        ),
    ],
)
def test_array_fields_numpy_would_read_otherwise_are_refused(change, message):
    array = np.zeros(2, np.float32)
    with pytest.raises(WeightsFileError, match=message):
        load_bytes(_array_pickle(array, **change))


def test_a_dtype_changed_after_use_is_refused():
    """numpy's BUILD on a dtype changes it in place, under arrays already built on it."""
    state = b"(K\x03X\x01\x00\x00\x00%sNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    dtype = b"cnumpy\ndtype\nX\x02\x00\x00\x00f4\x89\x88\x87Rq\x04" + state % b"<"  # memo 4
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
        b"(K\x01K\x01\x85" + dtype + b"\x89C\x04\x00\x00\x80?tb"
    )
    assert np.array_equal(load_bytes(b"\x80\x02]" + array + b"."), [1.0])
    again = (
        b"h\x04" + state % b">" + b"0"
    )  # BUILD on the dtype (memo 4) once the array is built, POP
    crafted = b"\x80\x02](" + array + again + b"e."
    assert np.array_equal(
        pickle.loads(crafted)[0], np.array([1.0], "<f4").view(">f4")
    )  # numpy: changed under it
    with pytest.raises(WeightsFileError, match="sets the state of a dtype twice or after using it"):
        load_bytes(crafted)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x02",
        b"\x80\x02}q\x00(X\x01\x00\x00\x00a",
        b"\x80\x02K\x01K\x02s.",
        b"\x80\x02h\x05.",
        b"\x80\x02)\x81.",
        b"\x80\x02]K\x01e.",
        b"\x80\x020.",
    ],
)
def test_damaged_files_raise_weights_file_error(data):
    with pytest.raises(WeightsFileError):
        load_bytes(data)
