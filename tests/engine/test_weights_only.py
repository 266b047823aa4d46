"""Checkpoints whose metadata holds objects torch's weights-only loading does not build (as every
checkpoint mmdetection 3 / mmengine saves while training: numpy scalars in `meta`, MessageHub
buffers) load their weights, without running anything the file names."""
import logging
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from d2ext.checkpoint import weights_only
from d2ext.checkpoint.weights_only import Unloaded, load_weights_only


class HistoryBufferLike:
    """Stands for mmengine's HistoryBuffer: a class the loading process need not have, holding
    numpy arrays."""

    def __init__(self):
        self._log_history = np.array([1.5, 1.25])
        self._count_history = np.array([1, 1])
        self.max_length = 1000000


class _CreatesFile:
    """Unpickling it (if it ran) creates `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def mmengine_like(tmp_path, marker=None, in_weights=False):
    state = OrderedDict(w=torch.arange(4.0), b=torch.ones(2))
    if in_weights:
        state["evil"] = _CreatesFile(str(marker))
    checkpoint = {
        "meta": {"epoch": 12, "seed": np.int64(3), "lr": np.float64(0.01), "mean": np.array([1.0, 2.0]),
                 "dataset_meta": {"classes": ("a", "b")}},
        "state_dict": state,
        "message_hub": {"log_scalars": OrderedDict(loss=HistoryBufferLike()), "runtime_info": {"iter": 10}},
    }
    if marker is not None and not in_weights:
        checkpoint["meta"]["hook"] = _CreatesFile(str(marker))
    path = str(tmp_path / "mm.pth")
    torch.save(checkpoint, path)
    return path


@pytest.fixture(autouse=True)
def d2ext_logs_reach_caplog(monkeypatch):
    """Detectron2's setup_logger (run by earlier tests in this process) stops "d2ext" propagating."""
    for name in ("d2ext", "d2ext.checkpoint"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)


def test_torch_alone_refuses_such_a_file(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        torch.load(mmengine_like(tmp_path), weights_only=True)


def test_weights_and_numpy_metadata_load_other_objects_are_placeholders(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="d2ext.checkpoint"):
        loaded = load_weights_only(mmengine_like(tmp_path))
    torch.testing.assert_close(loaded["state_dict"]["w"], torch.arange(4.0))
    meta = loaded["meta"]
    assert meta["seed"] == 3 and meta["lr"] == 0.01 and np.array_equal(meta["mean"], [1.0, 2.0])
    buffer = loaded["message_hub"]["log_scalars"]["loss"]
    assert isinstance(buffer, Unloaded) and buffer.global_name.endswith("test_weights_only.HistoryBufferLike")
    assert np.array_equal(buffer.state["_log_history"], [1.5, 1.25])  # its state, as data
    assert "HistoryBufferLike (not weights" in caplog.text


def test_a_code_running_global_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    loaded = load_weights_only(mmengine_like(tmp_path, marker))
    assert not marker.exists()
    assert isinstance(loaded["meta"]["hook"], Unloaded) and loaded["meta"]["hook"].global_name == "io.open"
    assert loaded["meta"]["hook"].args == (str(marker), "w")


def test_a_placeholder_among_the_weights_is_an_error_naming_it(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(pickle.UnpicklingError, match="its weights hold objects of io.open"):
        load_weights_only(mmengine_like(tmp_path, marker, in_weights=True))
    assert not marker.exists()


def test_gives_up_after_max_globals(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_only, "MAX_GLOBALS", 1)
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        load_weights_only(mmengine_like(tmp_path))


def test_checkpointer_loads_an_mmengine_style_file_into_a_model(tmp_path):
    from d2ext.checkpoint import Checkpointer

    model = torch.nn.Linear(2, 2)
    state = OrderedDict((k, torch.full_like(v, 7.0)) for k, v in model.state_dict().items())
    path = str(tmp_path / "trained.pth")
    torch.save({"model": state, "meta": {"seed": np.int64(1)}, "hub": HistoryBufferLike()}, path)
    Checkpointer(model).load(path)
    assert torch.equal(model.weight, torch.full((2, 2), 7.0))
    assert os.path.isfile(path)


def test_a_real_mmengine_message_hub_and_numpy_dtypes(tmp_path):
    """mmengine's own MessageHub state (HistoryBuffers; numpy pickles that name builtins.getattr)."""
    logging_module = pytest.importorskip("mmengine.logging")
    hub = logging_module.MessageHub.get_instance("d2ext_test_weights_only")
    hub.update_scalar("train/loss", 1.5)
    hub.update_scalar("train/lr", np.float64(0.01))
    path = str(tmp_path / "mmengine.pth")
    torch.save({"state_dict": OrderedDict(w=torch.ones(3)), "message_hub": hub.state_dict(),
                "meta": {"seed": np.int64(5)}}, path)
    loaded = load_weights_only(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(3)) and loaded["meta"]["seed"] == 5
    buffer = loaded["message_hub"]["log_scalars"]["train/lr"]
    assert buffer.global_name == "mmengine.logging.history_buffer.HistoryBuffer"
