"""Fuzzing d2ext's .pth loading path (load_weights_only; Hypothesis, fixed seed): torch.save files,
zip and legacy, with bytes flipped, cut or inserted, and with their data.pkl or tensor data mutated
inside a well-formed zip. For every input the loader returns what torch.load(weights_only=True)
returns (when torch loads it alone: no placeholders) or raises WeightsFileError; nothing else (no
other exception, no crash, no code run: a sentinel global that would create a file), in bounded
time."""

import io
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzz_support import RunsCode, fuzz_settings, opcode_streams, same
from hypothesis import event, given
from hypothesis import strategies as st

from d2ext.checkpoint.weights_only import load_weights_only
from d2ext.errors import WeightsFileError

SENTINEL = Path(tempfile.gettempdir()) / "d2ext_checkpoint_fuzz_sentinel"
pytestmark = pytest.mark.filterwarnings(
    "ignore:Detected pickle protocol", "ignore:invalid escape sequence"
)
SETTINGS = fuzz_settings(deadline_ms=5000, max_examples=2500)


def _saved(checkpoint, zipped=True) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer, _use_new_zipfile_serialization=zipped)
    return buffer.getvalue()


def _checkpoints():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    detectron2 = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": 3,
        "extra": [
            torch.arange(4, dtype=torch.int64),
            torch.tensor([True, False]),
            (1.5, "x", None),
        ],
    }
    mmdet = {
        "state_dict": OrderedDict(w=torch.arange(4.0)),
        "meta": {"seed": np.int64(3), "mean": np.ones(2), "evil": RunsCode(SENTINEL)},
    }
    return [
        _saved(detectron2),
        _saved(mmdet),
        _saved(detectron2, zipped=False),
        _saved(mmdet, zipped=False),
    ]


CORPUS = _checkpoints()


def _records(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def _zipped(records) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in records:
            zf.writestr(name, data)
    return buffer.getvalue()


def check(data: bytes):
    """The fuzz property for one input."""
    try:
        loaded = load_weights_only(io.BytesIO(data))
    except WeightsFileError:
        return "refused"
    try:
        reference = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        assert "Unsupported global" in str(e)  # d2ext loaded it with placeholders
        return "loaded with placeholders"
    assert same(loaded, reference)
    return "loaded"


def _mutate(draw, data: bytearray, max_changes: int = 3) -> bytes:
    for _ in range(draw(st.integers(1, max_changes))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@st.composite
def mutated_files(draw):
    """Any torch.save file, zip or legacy, damaged anywhere (zip structure and CRCs included)."""
    return _mutate(draw, bytearray(draw(st.sampled_from(CORPUS))))


@st.composite
def mutated_records(draw):
    """A zip torch.save file, data.pkl or one tensor record mutated, zipped again (valid CRCs)."""
    records = _records(draw(st.sampled_from(CORPUS[:2])))
    index = draw(st.sampled_from([i for i, (name, _) in enumerate(records) if "data" in name]))
    name, data = records[index]
    records[index] = (name, _mutate(draw, bytearray(data), 2))
    return _zipped(records)


@pytest.fixture(autouse=True)
def no_sentinel():
    SENTINEL.unlink(missing_ok=True)
    yield
    assert not SENTINEL.exists(), "a fuzzed checkpoint ran code"


def test_the_corpus_loads():
    assert [check(data) for data in CORPUS] == ["loaded", "loaded with placeholders"] * 2


@SETTINGS
@given(mutated_files())
def test_mutated_checkpoint_files(data):
    event(check(data))


@SETTINGS
@given(mutated_records())
def test_mutated_records_in_well_formed_zips(data):
    event(check(data))


@SETTINGS
@given(st.sampled_from(CORPUS[:2]), opcode_streams())
def test_generated_data_pkl_in_well_formed_zips(base, data_pkl):
    event(
        check(
            _zipped(
                [
                    (name, data_pkl if name.endswith("/data.pkl") else data)
                    for name, data in _records(base)
                ]
            )
        )
    )
