"""--resume follows OUTPUT_DIR/last_checkpoint only to a file inside OUTPUT_DIR, resolved exactly
as the loader will open it: Detectron2's load() cuts a "?query" off the name and iopath treats
"://" as a URL, and symlinks are followed, so each of those is checked, not just the text."""

import os
import pickle

import pytest
import torch

from d2ext.checkpoint import Checkpointer
from d2ext.errors import UnsafeCheckpointPathError


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """run/ (OUTPUT_DIR) with a good checkpoint, elsewhere/ with a code-running one; the
    unsafe-pickle opt-in on, so only the confinement stands between --resume and the file."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    model = torch.nn.Linear(2, 2)
    torch.save({"model": model.state_dict()}, run / "model_0000009.pth")
    with open(elsewhere / "model.pkl", "wb") as f:
        pickle.dump(
            {"model": {"weight": _CreatesFile(str(tmp_path / "ran"))}, "__author__": "x"}, f
        )
    monkeypatch.setenv("D2EXT_ALLOW_UNSAFE_PICKLE", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path, run, model


def _resume(run, model, named):
    (run / "last_checkpoint").write_text(named)
    return Checkpointer(model, str(run)).resume_or_load("", resume=True)


@pytest.mark.parametrize(
    "named",
    [
        "../elsewhere/model.pkl",  # ..
        "ABSOLUTE",  # an absolute path outside
        "../elsewhere/model.pkl?x/../../run/model_0000009.pth",  # passes a text check; load() cuts at "?"
        "model_0000009.pth?x",  # a query: not what is checked
        "file://../elsewhere/model.pkl",  # a URL
        "link/model.pkl",  # a symlink inside OUTPUT_DIR to a folder outside
    ],
)
def test_resume_outside_output_dir_is_refused(named, folders):
    tmp_path, run, model = folders
    os.symlink(tmp_path / "elsewhere", run / "link")
    named = str(tmp_path / "elsewhere" / "model.pkl") if named == "ABSOLUTE" else named
    with pytest.raises(UnsafeCheckpointPathError, match="outside the output folder") as info:
        _resume(run, model, named)
    assert "last_checkpoint names" in str(info.value)
    assert not (tmp_path / "ran").exists()


def test_resume_inside_output_dir_loads(folders):
    _, run, model = folders
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.zero_()
    (run / "sub").mkdir()
    os.symlink(run / "model_0000009.pth", run / "sub" / "latest.pth")  # a link that stays inside
    for named in ("model_0000009.pth", "./sub/../model_0000009.pth", "sub/latest.pth"):
        _resume(run, model, named)
        assert torch.equal(model.weight, before["weight"]), named
