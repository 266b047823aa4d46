"""No d2ext entry point runs code from a config or weights file it is given: every console script
and every script under tools/ (found by tests/entry_points.py, so a new tool fails here until it
has a row) is run with a yaml config holding a python tag, and, where it takes weights, with a
.pkl and a .pth whose unpickling would create a file. Nothing may run; each says why."""

import os
import pickle
import runpy
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY_CONFIG
from entry_points import CONSOLE_SCRIPTS, TOOL_SCRIPTS

from d2ext.errors import D2extError

NO_EVAL = ["DATASETS.TEST", "()"]
# Tool (module stem or script stem) -> (argv with a bad config, argv with bad weights or None
# with the reason it reads no weights). {yaml}: python-tag config; {good}: the tiny config;
# {weights}: the bad weights file; {mmdet}: a valid mmdetection-style checkpoint; {img}; {out}.
ARGS = {
    "train_net": (
        ["--config-file", "{yaml}", "--eval-only", *NO_EVAL, "OUTPUT_DIR", "{out}"],
        [
            "--config-file",
            "{good}",
            "--eval-only",
            *NO_EVAL,
            "MODEL.WEIGHTS",
            "{weights}",
            "OUTPUT_DIR",
            "{out}",
        ],
    ),
    "demo": (
        ["--config-file", "{yaml}", "--input", "{img}"],
        ["--config-file", "{good}", "--input", "{img}", "--opts", "MODEL.WEIGHTS", "{weights}"],
    ),
    "export_model": (
        ["--config-file", "{yaml}", "--output", "{out}"],
        ["--config-file", "{good}", "--output", "{out}", "MODEL.WEIGHTS", "{weights}"],
    ),
    "visualize_predictions": (
        ["--config-file", "{yaml}", "--output", "{out}/p.png"],
        ["--config-file", "{good}", "--output", "{out}/p.png", "MODEL.WEIGHTS", "{weights}"],
    ),
    "convert_mmdet_checkpoint": (
        ["{mmdet}", "{out}/c.pth", "--config-file", "{yaml}"],
        ["{weights}", "{out}/c.pth", "--config-file", "{good}"],
    ),
    "compare_methods": (
        [
            "--configs",
            "{yaml}",
            "--seeds",
            "1",
            "--max-iter",
            "1",
            "--out",
            "{out}",
            "--report-only",
        ],
        "reads no weights file (it trains from the configs)",
    ),
    "benchmark_models": (["--configs", "{yaml}"], "reads no weights file"),
    "visualize_data": (
        ["--source", "annotation", "--config-file", "{yaml}", "--output-dir", "{out}"],
        "reads no weights file (it draws the data, not a model's output)",
    ),
    "visualize_json_results": (
        None,
        "reads no config and no weights file (a results json, read with json.load)",
    ),
    "analyze_errors": (
        None,
        "reads no config and no weights file (a results json, read with json.load)",
    ),
    "analyze_model": (
        ["--tasks", "flop", "--config-file", "{yaml}"],
        ["--tasks", "flop", "-n", "1", "--config-file", "{good}", "MODEL.WEIGHTS", "{weights}"],
    ),
    "benchmark": (
        ["--task", "eval", "--config-file", "{yaml}"],
        [
            "--task",
            "eval",
            "--num-iter",
            "1",
            "--config-file",
            "{good}",
            "MODEL.WEIGHTS",
            "{weights}",
        ],
    ),
    "tta_swa_effect": (
        None,
        "reads no config and no weights file itself: it runs train_net (d2ext's loaders) on the "
        "runs of a compare_methods folder, refusing any flag in their commands",
    ),
    "benchmark_ops": (
        None,
        "reads no config and no weights file (it times the ops on random tensors)",
    ),
}


class _CreatesFile:
    """Unpickling it creates `path`: proof that the file ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _entry_points():
    for name, (module, _) in sorted(CONSOLE_SCRIPTS.items()):
        yield pytest.param("module", module, module.rsplit(".", 1)[-1], id=name)
    for path in TOOL_SCRIPTS:
        yield pytest.param("script", path, os.path.splitext(os.path.basename(path))[0], id=path)


@pytest.fixture
def files(tmp_path):
    marker = tmp_path / "ran"
    yaml_file = tmp_path / "evil.yaml"
    yaml_file.write_text(
        f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  DEVICE: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"w": _CreatesFile(str(marker))}, "__author__": "x"}, f)
    torch.save({"model": {"w": _CreatesFile(str(marker))}}, tmp_path / "evil.pth")
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "mmdet.pth")
    cv2.imwrite(str(tmp_path / "img.png"), np.full((40, 50, 3), 128, np.uint8))
    (tmp_path / "out").mkdir()
    return {
        "yaml": yaml_file,
        "good": TINY_CONFIG,
        "mmdet": tmp_path / "mmdet.pth",
        "img": tmp_path / "img.png",
        "out": tmp_path / "out",
        "marker": marker,
        "pkl": tmp_path / "evil.pkl",
        "pth": tmp_path / "evil.pth",
    }


def _run(kind, target, argv, monkeypatch):
    """Runs the entry point in this process; returns its exit status, or the D2extError it raised."""
    monkeypatch.chdir(REPO_ROOT)
    try:
        if kind == "module":
            import importlib

            importlib.import_module(target).main(argv)
        else:
            monkeypatch.setattr(sys, "argv", [target, *argv])
            runpy.run_path(os.path.join(REPO_ROOT, target), run_name="__main__")
    except SystemExit as e:
        return e.code
    except D2extError as e:
        return e
    return 0


def _check(kind, target, argv, files, monkeypatch, capsys, expected):
    result = _run(kind, target, argv, monkeypatch)
    err = capsys.readouterr().err
    assert not files["marker"].exists(), f"{target} ran code from {argv}"
    message = str(result) if isinstance(result, D2extError) else err
    assert isinstance(result, D2extError) or result == 1, (result, err[-2000:])
    assert any(text in message for text in expected), message[-2000:]


@pytest.mark.parametrize("kind,target,tool", _entry_points())
def test_python_tag_yaml_runs_nothing(kind, target, tool, files, monkeypatch, capsys):
    assert tool in ARGS, f"{target}: add a row to ARGS (how it loads a config and weights)"
    config_argv, _ = ARGS[tool]
    if config_argv is None:
        return
    argv = [a.format(**files) for a in config_argv]
    _check(
        kind,
        target,
        argv,
        files,
        monkeypatch,
        capsys,
        ["has a yaml tag that safe yaml does not load"],
    )


@pytest.mark.parametrize("suffix", ["pkl", "pth"])
@pytest.mark.parametrize("kind,target,tool", _entry_points())
def test_code_running_weights_run_nothing(kind, target, tool, suffix, files, monkeypatch, capsys):
    assert tool in ARGS, f"{target}: add a row to ARGS (how it loads a config and weights)"
    weights_argv = ARGS[tool][1]
    if isinstance(weights_argv, str):  # the reason it takes no weights
        return
    argv = [
        a.format(weights=files[suffix], **{k: v for k, v in files.items() if k != "weights"})
        for a in weights_argv
    ]
    _check(
        kind,
        target,
        argv,
        files,
        monkeypatch,
        capsys,
        ["is not a valid weights file", "is not a valid checkpoint"],
    )
