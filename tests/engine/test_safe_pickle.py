"""Model-zoo .pkl weights load without running the file (d2ext/checkpoint/safe_pickle.py):
numeric numpy arrays, scalars and plain data are rebuilt; anything else the file names is refused."""
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from d2ext.checkpoint.safe_pickle import ALLOW_UNSAFE_PICKLE_ENV, _array_from_bytes, _Budget, _DType, load_pickle_weights


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
        "__author__": "Caffe2", "iter": np.int64(7), "lr": np.float32(0.5), "names": ["a", ("b", 1.5)],
    }
    loaded = load(dump(tmp_path, data, protocol))
    for k, v in data["model"].items():  # in native byte order (torch.from_numpy needs it)
        assert loaded["model"][k].dtype == v.dtype.newbyteorder("=") and np.array_equal(loaded["model"][k], v), k
    assert isinstance(loaded["model"], OrderedDict) and list(loaded["model"]) == list(data["model"])
    assert loaded["iter"] == 7 and loaded["iter"].dtype == np.int64 and loaded["lr"] == np.float32(0.5)
    assert loaded["names"] == ["a", ("b", 1.5)]


def test_python2_string_data_read_as_latin1():
    """Python 2 pickles hold array bytes as str; encoding="latin1" gives them back as such."""
    raw = np.array([1.0, -2.5], "<f4").tobytes().decode("latin1")
    dtype = _DType("f4", False, True)
    dtype.__setstate__((3, "<", None, None, None, -1, -1, 0))
    assert np.array_equal(_array_from_bytes((2,), dtype, False, raw, _Budget(100)), [1.0, -2.5])


@pytest.mark.parametrize("bad,message", [
    ({"model": {"w": np.array([1, 2], dtype=object)}}, "is not a bool, integer or float type"),
    ({"model": {"w": np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])}}, "is not a bool, integer or float type"),
    ({"model": {"w": np.array(["x"])}}, "is not a bool, integer or float type"),
    ({"model": {"w": np.zeros(2, np.float128)}}, "is not a bool, integer or float type of <= 64 bits"),
])
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
    with pytest.raises(pickle.UnpicklingError, match="more than its own size"):
        _array_from_bytes((2,), dtype, False, b"\0" * 8, budget)


def load_bytes(data):
    import io

    return load_pickle_weights(io.BytesIO(data))


@pytest.mark.parametrize("data,message", [
    # numpy.ndarray called by the file (shape, dtype, buffer and strides would be its choice).
    (b"\x80\x02cnumpy\nndarray\n(K\x02tR.", "not callable"),
    (b"\x80\x02cnumpy\nndarray\n)\x81.", "not a type object"),
    (b"(inumpy\nndarray\n.", "opcode INST"),
    # The extension registry (skips find_class when cached), a 2**32 memo index.
    (b"\x80\x02\x82\xf0.", "opcode EXT1"),
    (b"\x80\x02Nr\xff\xff\xff\xff.", "memo index 4294967295"),
    # BUILD on an OrderedDict (its items() would be the file's) and on a stand-in function.
    (b"\x80\x02ccollections\nOrderedDict\n)R}X\x05\x00\x00\x00itemsK\x01sb.", "sets the state of an OrderedDict"),
    (b"\x80\x02c_codecs\nencode\n}b.", "sets the state of _Call"),
    (b"\x80\x02ccollections\nOrderedDict\nK\x05\x85R.", "OrderedDict with arguments"),
    (b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.", "bytes\\(\\) with arguments"),
])
def test_crafted_files_are_refused(data, message):
    with pytest.raises((pickle.UnpicklingError, TypeError), match=message):
        load_bytes(data)


def test_sets_and_shared_containers_are_refused_quickly():
    """A file could reference one container many times for 2 bytes each (2**40 paths here, or
    a dict key whose hash takes 2**60 steps): only strings, numbers and dtypes may be shared."""
    import time

    with pytest.raises(pickle.UnpicklingError, match="opcode EMPTY_SET"):
        load_bytes(pickle.dumps({"w": {1, 2}}, protocol=4))
    loop = []
    loop.append(loop)
    x = [np.arange(3, dtype=np.float32)]
    for _ in range(40):
        x = [x, x]
    key = (1, 2)
    for _ in range(60):  # (as a dict key, hashing it would take 2**60 steps)
        key = (key, key)
    start = time.time()
    for shared in (loop, x, [key]):
        with pytest.raises(pickle.UnpicklingError, match="references a container twice"):
            load_bytes(pickle.dumps(shared, protocol=4))
    assert time.time() - start < 5


def test_one_buffer_used_many_times_is_paid_for():
    big = "x" * 100_000  # one memoised str, encoded to bytes by 50 calls: 5 MB from a ~100 kB file
    # A protocol-2 file whose 50 entries are _codecs.encode(<the same memoised str>, "latin1").
    entry = b"c_codecs\nencode\nh\x01X\x06\x00\x00\x00latin1\x86R"
    head = b"\x80\x02]X" + len(big).to_bytes(4, "little") + big.encode() + b"q\x01("
    crafted = head + entry * 50 + b"e."
    with pytest.raises(pickle.UnpicklingError, match="more than its own size"):
        load_bytes(crafted)


def test_a_code_running_global_is_refused_and_named(tmp_path):
    marker = tmp_path / "ran"
    path = dump(tmp_path, {"model": {"w": np.ones(2)}, "evil": _CreatesFile(str(marker))})
    with pytest.raises(pickle.UnpicklingError, match=r"it names io.open; .*D2EXT_ALLOW_UNSAFE_PICKLE=1"):
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
    bad = dump(tmp_path, {"model": state, "__author__": "x", "evil": _CreatesFile(str(marker))}, name="bad.pkl")
    with pytest.raises(InvalidCheckpointError, match=f"{bad} is not a valid weights file: .*it names io.open"):
        Checkpointer(model).load(bad)
    assert not marker.exists()
    not_a_dict = dump(tmp_path, [1, 2], name="list.pkl")
    with pytest.raises(InvalidCheckpointError, match="list.pkl is not a valid weights file: .*holds no dict of weights by name"):
        Checkpointer(model).load(not_a_dict)
    # The documented opt-in: Detectron2's plain pickle.load (the file runs).
    monkeypatch.setenv(ALLOW_UNSAFE_PICKLE_ENV, "1")
    Checkpointer(model).load(bad)
    assert marker.exists()
