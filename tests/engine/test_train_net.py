"""tools/train_net.py end to end on the tiny config: train, --eval-only, --resume, two
processes on the CPU, and a lazy config. Each run is a subprocess, as a user would start it."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, TINY_CONFIG

TRAIN_NET = os.path.join(REPO_ROOT, "tools", "train_net.py")
# A few small iterations; no evaluation at the end of training (DATASETS.TEST empty).
FAST = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "SOLVER.WARMUP_ITERS",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(192,)",
    "INPUT.MAX_SIZE_TRAIN",
    "256",
    "DATALOADER.NUM_WORKERS",
    "0",
    "DATASETS.TEST",
    "()",
]


def run(*args, expect_ok=True, returncode=None, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}  # the caller's env wins
    result = subprocess.run(
        [sys.executable, TRAIN_NET, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    if expect_ok:
        assert result.returncode == 0, output[-4000:]
    if returncode is not None:  # e.g. 1 for an exception, never a signal (negative)
        assert result.returncode == returncode, (result.returncode, output[-4000:])
    return output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("train"))
    log = run("--config-file", TINY_CONFIG, *FAST, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", out)
    return out, log


def test_train_writes_checkpoints(trained):
    out, log = trained
    assert "Starting training from iteration 0" in log
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert os.path.isfile(os.path.join(out, "model_0000001.pth"))  # CHECKPOINT_PERIOD 2
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert metrics and all(
        k in metrics[-1] for k in ("loss_cls", "loss_box_reg", "loss_centerness")
    )


def test_eval_only_of_the_checkpoint(trained, tmp_path):
    out, _ = trained
    log = run(
        "--config-file",
        TINY_CONFIG,
        "--eval-only",
        "MODEL.WEIGHTS",
        os.path.join(out, "model_final.pth"),
        "INPUT.MIN_SIZE_TEST",
        "192",
        "DATASETS.TEST",
        "('d2ext_shapes_minival',)",
        "OUTPUT_DIR",
        str(tmp_path),
    )
    assert "Evaluation results for bbox" in log
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert f"| {key}" in log or f"{key} " in log
    assert os.path.isfile(os.path.join(str(tmp_path), "inference", "coco_instances_results.json"))


def test_resume_continues_from_the_last_iteration(trained, tmp_path):
    out, _ = trained
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    # Resume from a copy of the finished run, asking for 2 more iterations.
    for name in ("model_final.pth", "last_checkpoint"):
        with (
            open(os.path.join(out, name), "rb") as src,
            open(os.path.join(resumed, name), "wb") as dst,
        ):
            dst.write(src.read())
    log = run(
        "--config-file",
        TINY_CONFIG,
        "--resume",
        *FAST,
        "SOLVER.MAX_ITER",
        "6",
        "OUTPUT_DIR",
        resumed,
    )
    assert "Starting training from iteration 4" in log


def test_two_processes_on_cpu(tmp_path):
    log = run(
        "--config-file",
        TINY_CONFIG,
        "--num-gpus",
        "2",
        *FAST,
        "SOLVER.MAX_ITER",
        "2",
        "OUTPUT_DIR",
        str(tmp_path),
    )
    assert "world size: 2" in log.lower() or "Rank of current process: 0. World size: 2" in log
    assert os.path.isfile(os.path.join(str(tmp_path), "model_final.pth"))


def test_lazy_config_trains_and_evaluates(tmp_path):
    lazy = TINY_CONFIG[: -len(".yaml")] + ".py"
    log = run(
        "--config-file",
        lazy,
        "train.max_iter=2",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        f"train.output_dir={tmp_path}",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[192]",
        "dataloader.test.dataset.names=d2ext_shapes_minival",
        "dataloader.test.mapper.augmentations.0.short_edge_length=192",
    )
    assert "Starting training from iteration 0" in log
    assert os.path.isfile(os.path.join(str(tmp_path), "model_final.pth"))
    assert "Evaluation results for bbox" in log
