"""Checkpoints whose metadata holds objects torch's weights-only loading does not build (as every
checkpoint mmdetection 3 / mmengine saves while training: numpy scalars in `meta`, MessageHub
buffers) load their weights, without running or building anything the file names."""
import logging
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
        self.max_length = 1000000


class _CreatesFile:
    """Unpickling it (if it ran) creates `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def save(tmp_path, checkpoint, name="ck.pth"):
    path = str(tmp_path / name)
    torch.save(checkpoint, path)
    return path


def mmengine_like(marker=None, in_weights=False):
    state = OrderedDict(w=torch.arange(4.0), b=torch.ones(2))
    checkpoint = {
        "meta": {"epoch": 12, "seed": np.int64(3), "mean": np.array([1.0, 2.0]), "classes": ("a", "b")},
        "state_dict": state,
        "message_hub": {"log_scalars": OrderedDict(loss=HistoryBufferLike()), "runtime_info": {"iter": 10}},
    }
    if marker is not None:
        (state if in_weights else checkpoint["meta"])["evil"] = _CreatesFile(str(marker))
    return checkpoint


@pytest.fixture(autouse=True)
def d2ext_logs_reach_caplog(monkeypatch):
    """Detectron2's setup_logger (run by earlier tests in this process) stops "d2ext" propagating."""
    for name in ("d2ext", "d2ext.checkpoint"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)


def test_torch_alone_refuses_such_a_file(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        torch.load(save(tmp_path, mmengine_like()), weights_only=True)


def test_weights_load_metadata_objects_are_placeholders(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="d2ext.checkpoint"):
        loaded = load_weights_only(save(tmp_path, mmengine_like()))
    torch.testing.assert_close(loaded["state_dict"]["w"], torch.arange(4.0))
    assert loaded["meta"]["epoch"] == 12 and loaded["meta"]["classes"] == ("a", "b")
    # numpy too: its real rebuilders would trust the file's dtype flags.
    assert isinstance(loaded["meta"]["seed"], Unloaded) and "numpy" in loaded["meta"]["seed"].global_name
    buffer = loaded["message_hub"]["log_scalars"]["loss"]
    assert isinstance(buffer, Unloaded) and buffer.global_name.endswith("test_weights_only.HistoryBufferLike")
    assert "HistoryBufferLike" in caplog.text and "(metadata; weights-only loading does not build them)" in caplog.text


def test_a_code_running_global_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    loaded = load_weights_only(save(tmp_path, mmengine_like(marker)))
    assert not marker.exists()
    evil = loaded["meta"]["evil"]
    assert isinstance(evil, Unloaded) and evil.global_name == "io.open" and evil.args == (str(marker), "w")


def test_a_placeholder_among_the_weights_is_an_error_naming_it(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(pickle.UnpicklingError, match=r"its weights \(state_dict\) are not only tensors.*io.open"):
        load_weights_only(save(tmp_path, mmengine_like(marker, in_weights=True)))
    assert not marker.exists()


def test_placeholder_classes_and_tensor_attributes_in_the_weights_are_errors(tmp_path):
    """Not only placeholder instances: a placeholder class never called, or one hung on a tensor."""
    checkpoint = mmengine_like()
    checkpoint["state_dict"]["cls"] = HistoryBufferLike
    with pytest.raises(pickle.UnpicklingError, match=r"not only tensors by name; .*HistoryBufferLike"):
        load_weights_only(save(tmp_path, checkpoint))
    checkpoint = mmengine_like()
    checkpoint["state_dict"]["w"].note = HistoryBufferLike()
    with pytest.raises(pickle.UnpicklingError, match=r"not only tensors by name"):
        load_weights_only(save(tmp_path, checkpoint))


def test_a_detectron2_file_may_hold_no_placeholder_at_all(tmp_path):
    """Resuming reads its optimizer, scheduler and iteration as well as the model."""
    checkpoint = {"model": OrderedDict(w=torch.ones(2)), "scheduler": {"last_epoch": np.int64(5)}}
    with pytest.raises(pickle.UnpicklingError, match="its checkpoint holds objects of numpy"):
        load_weights_only(save(tmp_path, checkpoint))
    # Keys and sets too; a dummy state_dict beside "model" does not make it an mmdetection file.
    with pytest.raises(pickle.UnpicklingError, match="its checkpoint holds objects of numpy"):
        load_weights_only(save(tmp_path, {"model": {np.int64(1): torch.ones(1)}}))
    with pytest.raises(pickle.UnpicklingError, match="its checkpoint holds objects of numpy"):
        load_weights_only(save(tmp_path, {"model": {}, "state_dict": {}, "x": {np.int64(1)}}))


def test_shared_references_are_scanned_once(tmp_path):
    import time

    x = [np.int64(1)]
    for _ in range(40):  # 2**40 paths to one placeholder
        x = [x, x]
    start = time.time()
    with pytest.raises(pickle.UnpicklingError, match="its checkpoint holds objects of numpy"):
        load_weights_only(save(tmp_path, {"model": {}, "x": x}))
    assert time.time() - start < 10


def test_legacy_files_find_globals_one_at_a_time_up_to_max_globals(tmp_path, monkeypatch):
    path = save(tmp_path, mmengine_like())
    monkeypatch.setattr(weights_only, "_names_in_file", lambda f: [])  # as for a pre-zip file
    assert isinstance(load_weights_only(path)["meta"]["seed"], Unloaded)
    monkeypatch.setattr(weights_only, "MAX_GLOBALS", 1)
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        load_weights_only(path)


def test_the_users_allowlist_is_kept_and_used(tmp_path):
    path = save(tmp_path, mmengine_like())
    with torch.serialization.safe_globals([HistoryBufferLike]):
        loaded = load_weights_only(path)
        assert HistoryBufferLike in torch.serialization.get_safe_globals()
    assert isinstance(loaded["message_hub"]["log_scalars"]["loss"], HistoryBufferLike)


def test_checkpointer_loads_a_plain_file_and_names_a_bad_one(tmp_path):
    from d2ext.checkpoint import Checkpointer
    from d2ext.checkpoint.safe_resume import InvalidCheckpointError

    model = torch.nn.Linear(2, 2)
    state = OrderedDict((k, torch.full_like(v, 7.0)) for k, v in model.state_dict().items())
    Checkpointer(model).load(save(tmp_path, {"model": state, "iteration": 3}))
    assert torch.equal(model.weight, torch.full((2, 2), 7.0))
    bad = save(tmp_path, {"model": state, "extra": HistoryBufferLike()}, "bad.pth")
    with pytest.raises(InvalidCheckpointError, match=f"{bad} is not a valid checkpoint.*HistoryBufferLike"):
        Checkpointer(model).load(bad)


def test_a_real_mmengine_message_hub(tmp_path):
    """mmengine's own MessageHub state (HistoryBuffers; numpy pickles that name builtins.getattr)."""
    logging_module = pytest.importorskip("mmengine.logging")
    hub = logging_module.MessageHub.get_instance("d2ext_test_weights_only")
    hub.update_scalar("train/loss", 1.5)
    hub.update_scalar("train/lr", np.float64(0.01))
    path = save(tmp_path, {"state_dict": OrderedDict(w=torch.ones(3)), "message_hub": hub.state_dict(),
                           "meta": {"seed": np.int64(5)}})
    loaded = load_weights_only(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    assert loaded["message_hub"]["log_scalars"]["train/lr"].global_name == "mmengine.logging.history_buffer.HistoryBuffer"
