"""tools/train_net.py must not run code from a config or a checkpoint it was pointed at, and
names the file it cannot load (issue #15); lazy --eval-only --resume evaluates the last
checkpoint of train.output_dir."""

import argparse
import os
import pickle

import pytest
import torch
from conftest import CONFIGS, TINY_CONFIG
from engine.test_train_net import run

NO_EVAL = ["DATASETS.TEST", "()"]


class _CreatesFile:
    """Unpickling it creates `path`: proof that the file was executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_yaml_python_tag_is_refused_unless_allowed(tmp_path):
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(
        f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  DEVICE: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    log = run(
        "--config-file",
        str(config),
        "--eval-only",
        *NO_EVAL,
        "OUTPUT_DIR",
        str(tmp_path),
        expect_ok=False,
        returncode=1,
    )
    assert f"Config file {config} has a yaml tag that safe yaml does not load" in log
    assert not marker.exists()
    # The documented opt-in (the file then runs, as with Detectron2).
    run(
        "--allow-unsafe-yaml",
        "--config-file",
        str(config),
        "--eval-only",
        *NO_EVAL,
        "OUTPUT_DIR",
        str(tmp_path),
        expect_ok=False,
    )
    assert marker.exists()


@pytest.mark.parametrize("named", ["absolute", "dotdot"])
def test_resume_refuses_a_checkpoint_outside_output_dir(named, tmp_path):
    out, outside = tmp_path / "run", tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    marker = tmp_path / "ran"
    with open(outside / "model.pkl", "wb") as f:
        pickle.dump({"model": _CreatesFile(str(marker))}, f)
    (out / "last_checkpoint").write_text(
        str(outside / "model.pkl") if named == "absolute" else "../elsewhere/model.pkl"
    )
    log = run(
        "--config-file",
        TINY_CONFIG,
        "--eval-only",
        "--resume",
        *NO_EVAL,
        "OUTPUT_DIR",
        str(out),
        expect_ok=False,
        returncode=1,
    )
    assert f"{out}/last_checkpoint names" in log and "outside the output folder" in log
    assert str(outside / "model.pkl") in log
    assert not marker.exists()


def test_corrupt_weights_error_names_the_file(tmp_path):
    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"\x80\x02garbage" * 20)
    log = run(
        "--config-file",
        TINY_CONFIG,
        "--eval-only",
        *NO_EVAL,
        "MODEL.WEIGHTS",
        str(weights),
        "OUTPUT_DIR",
        str(tmp_path),
        expect_ok=False,
        returncode=1,
    )
    assert f"{weights} is not a valid checkpoint" in log
    assert "weights_only` set to `False" not in log


def _lazy_cfg(tmp_path, *overrides):
    from d2ext.engine import setup

    path = os.path.join(CONFIGS, "Synthetic", "atss_R_18_FPN_tiny.py")
    args = argparse.Namespace(
        config_file=path,
        opts=[f"train.output_dir={tmp_path}", *overrides],
        eval_only=True,
        resume=True,
        num_gpus=1,
        num_machines=1,
        machine_rank=0,
        dist_url="auto",
    )
    return args, setup(args)


def test_lazy_eval_only_resume_loads_the_last_checkpoint(tmp_path, monkeypatch):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate

    from d2ext.engine import lazy

    args, cfg = _lazy_cfg(tmp_path)
    saved = instantiate(cfg.model)
    with torch.no_grad():
        saved.head.cls_score.bias.fill_(1.25)
    DetectionCheckpointer(saved, str(tmp_path)).save("model_final")
    # Stands in for the evaluation: returns what it would evaluate.
    monkeypatch.setattr(lazy, "do_test", lambda cfg, model: model)
    evaluated = lazy.evaluate_lazy(args, cfg)
    torch.testing.assert_close(evaluated.head.cls_score.bias, saved.head.cls_score.bias)


def test_lazy_eval_only_without_weights_is_an_error(tmp_path, monkeypatch):
    from d2ext.engine import lazy

    args, cfg = _lazy_cfg(tmp_path)
    monkeypatch.setattr(lazy, "do_test", lambda cfg, model: model)
    with pytest.raises(
        FileNotFoundError, match=r"train.init_checkpoint is empty: no weights to load"
    ):
        lazy.evaluate_lazy(args, cfg)
