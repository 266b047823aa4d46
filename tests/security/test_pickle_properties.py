"""Property test (Hypothesis, fixed seed): every array d2ext's .pkl reader accepts is the array
pickle.load + numpy gives (values, dtype up to byte order, C / Fortran layout), over every accepted
dtype, byte order, layout and pickle protocol; numpy reductions with one field changed load as
numpy reads them or end with a WeightsFileError."""

import io
import pickle

import numpy as np
from fuzz_support import fuzz_settings, same
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.core.numeric import _frombuffer

from d2ext.checkpoint.safe_pickle import load_pickle_weights
from d2ext.errors import WeightsFileError

ACCEPTED = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"]
REFUSED = ["f16", "c8", "c16", "O", "S3", "U2", "M8[s]", "m8[s]", "V4", [("a", "f4"), ("b", "i4")]]
SETTINGS = fuzz_settings(deadline_ms=2000, max_examples=500)


class _Reduced:
    def __init__(self, *reduced):
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


def load(data: bytes):
    return load_pickle_weights(io.BytesIO(data))


@st.composite
def arrays(draw):
    """Arrays of an accepted dtype in any byte order, C / Fortran / strided layout, 0 to 4 dims."""
    dtype = np.dtype(draw(st.sampled_from(ACCEPTED)))
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(draw(st.sampled_from("<>=")))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    array = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["C", "F", "transposed", "strided"]))
    if layout == "F":
        array = np.asfortranarray(array)
    elif layout == "transposed":
        array = array.T
    elif layout == "strided" and array.ndim:
        array = array[::2]
    return array


@SETTINGS
@given(arrays(), st.sampled_from([0, 2, 4, 5]))
def test_accepted_arrays_and_scalars_are_numpys(array, protocol):
    data = pickle.dumps(
        {"w": array, "s": array.reshape(-1)[0] if array.size else None}, protocol=protocol
    )
    loaded, reference = load(data), pickle.loads(data)
    assert same(loaded, reference)
    assert loaded["w"].flags.writeable


@SETTINGS
@given(st.sampled_from(REFUSED), st.sampled_from([2, 4, 5]))
def test_other_dtypes_are_refused(dtype, protocol):
    with np.testing.suppress_warnings():
        array = np.zeros(3, dtype)
    try:
        load(pickle.dumps({"w": array}, protocol=protocol))
    except WeightsFileError as e:
        assert "dtype" in str(e) or "object arrays" in str(e)
    else:
        raise AssertionError(f"{array.dtype} was loaded")


# One field of numpy's own reduction changed: what d2ext loads, numpy reads the same way.
FORTRAN_FLAGS = [True, False, 0, 1, 2, -1, 2**31, 1.0, None, "F", b"\x01"]
VERSIONS = [0, 1, 2, -1, True, None]
ORDERS = ["C", "F", "f", "c", "A", "K", b"F", None, "", 1]
ENDIANS = ["<", ">", "=", "|", "x", "", None, b"<"]
TAILS = [
    (None, None, None, -1, -1, 0),
    (None, None, None, 4, 4, 0),
    (None, None, None, -1, -1, 8),
    (None, ("a",), None, -1, -1, 0),
    (None, None, None, -1, -1),
]


def _dtype(dtype: np.dtype, endian, tail):
    return _Reduced(np.dtype, (dtype.str[1:], False, True), (3, endian, *tail))


def load_or_refuse(data: bytes):
    """d2ext's result, checked against pickle.load; None when d2ext refused it."""
    try:
        loaded = load(data)
    except WeightsFileError:
        return None
    reference = pickle.loads(data)  # d2ext accepted: numpy must read the same
    assert same(loaded, reference)
    return loaded


@SETTINGS
@given(
    arrays(),
    st.sampled_from(FORTRAN_FLAGS),
    st.sampled_from(VERSIONS),
    st.sampled_from(ENDIANS),
    st.sampled_from(TAILS),
    st.sampled_from([0, 2, 4, 5]),
)
def test_changed_array_states_load_as_numpy_reads_them_or_are_refused(
    array, fortran, version, endian, tail, protocol
):
    func, args, (_, shape, dtype, _, raw) = array.__reduce__()
    state = (version, shape, _dtype(dtype, endian, tail), fortran, raw)
    loaded = load_or_refuse(pickle.dumps({"w": _Reduced(func, args, state)}, protocol=protocol))
    canonical = (
        tail == TAILS[0]
        and endian in ("<", ">", "=", "|")
        and type(version) is int
        and version in (0, 1)
    )
    if canonical and type(fortran) in (bool, int) and abs(fortran) < 2**31:
        assert loaded is not None  # what numpy writes, and ints as flags, load


@SETTINGS
@given(arrays(), st.sampled_from(ORDERS), st.sampled_from(ENDIANS), st.booleans())
def test_changed_protocol_5_orders_load_as_numpy_reads_them_or_are_refused(
    array, order, endian, readonly
):
    array = np.ascontiguousarray(array)
    raw = array.tobytes() if readonly else bytearray(array.tobytes())
    reduced = _Reduced(
        _frombuffer, (raw, _dtype(array.dtype, endian, TAILS[0]), array.shape, order)
    )
    loaded = load_or_refuse(pickle.dumps({"w": reduced}, protocol=5))
    if order in ("C", "F") and endian in ("<", ">", "=", "|"):
        assert loaded is not None
