"""Fuzzing d2ext's .pkl reader (Hypothesis, fixed seed): valid weights pickles with bytes flipped,
cut, inserted, repeated, and opcode streams built at random. For every input the reader returns
what pickle.load returns for it or raises WeightsFileError; nothing else (no other exception, no
crash, no code run: a sentinel global that would create a file), in bounded time (the deadline)."""

import io
import pickle
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from fuzz_support import OPCODES, RunsCode, fuzz_settings, opcode_streams, reference_load, same
from hypothesis import event, given
from hypothesis import strategies as st

from d2ext.checkpoint.safe_pickle import load_pickle_weights
from d2ext.errors import WeightsFileError

SENTINEL = Path(tempfile.gettempdir()) / "d2ext_pickle_fuzz_sentinel"
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence")
SETTINGS = fuzz_settings(deadline_ms=3000, max_examples=4000)


def _weights(seed: int):
    rng = np.random.default_rng(seed)
    return {
        "model": OrderedDict(
            w=rng.standard_normal((2, 3)).astype(np.float32),
            f=np.asfortranarray(rng.integers(-9, 9, (3, 2)).astype(">i8")),
            b=np.array([True, False]),
            h=np.arange(3, dtype=np.float16),
            u=np.zeros((0, 2), np.uint8),
        ),
        "__author__": "Caffe2",
        "iter": np.int64(7),
        "lr": np.float32(0.5),
        "names": ["a", ("b", 1.5)],
        "ids": {1: b"x", -2: None, None: 2**40},
    }


CORPUS = [pickle.dumps(_weights(p), protocol=p) for p in (0, 1, 2, 3, 4, 5)]
CORPUS += [
    pickle.dumps({"model": {"w": np.ones(2)}, "evil": RunsCode(SENTINEL)}, protocol=p)
    for p in (2, 4)
]
CORPUS += [
    pickle.dumps({"k": tuple(((i,),) for i in range(3)), "s": "é" * 3, 5: [2.5, -0.0]}, protocol=p)
    for p in (0, 2, 5)
]


def check(data: bytes):
    """The fuzz property for one input."""
    try:
        loaded = load_pickle_weights(io.BytesIO(data))
    except WeightsFileError:
        return "refused"
    # Accepted: plain data and numeric arrays, which pickle.load (real numpy) must read the same.
    assert same(loaded, reference_load(data)), data
    return "loaded"


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "repeat", "opcode"]))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 16))] * draw(st.integers(1, 4))
        elif kind == "opcode":
            data[at:at] = draw(OPCODES)
    return bytes(data)


@pytest.fixture(autouse=True)
def no_sentinel():
    SENTINEL.unlink(missing_ok=True)
    yield
    assert not SENTINEL.exists(), "a fuzzed pickle ran code"


def test_the_corpus_loads_and_the_sentinel_is_refused():
    outcomes = [check(data) for data in CORPUS]
    assert outcomes.count("refused") == 2 and outcomes.count("loaded") == len(CORPUS) - 2


@SETTINGS
@given(mutated())
def test_mutated_weights_pickles(data):
    event(check(data))


@SETTINGS
@given(opcode_streams())
def test_generated_opcode_streams(data):
    event(check(data))
