"""A 100-iteration tiny training on CUDA with AMP (float16 + GradScaler), then its evaluation, per
method (marked cuda: `make gpu-test`). D2EXT_GPU_TRAIN_METHODS picks the methods (comma-separated,
or "all"; default: a subset that keeps `make gpu-test` within a few minutes)."""

import os

import pytest
import torch
from conftest import CONFIGS
from engine.test_train_net import run

ALL = [
    "atss",
    "dynamic_atss",
    "gfl",
    "gflv2",
    "vfnet",
    "atss_vfl",
    "musu",
    "aploss_retinanet",
    "libra_faster_rcnn",
]
DEFAULT = ["atss", "gflv2", "vfnet"]
SCORE_KEY = {
    "atss": "MODEL.ATSS",
    "atss_vfl": "MODEL.ATSS",
    "dynamic_atss": "MODEL.DYNAMIC_ATSS",
    "gfl": "MODEL.GFL",
    "gflv2": "MODEL.GFL",
    "vfnet": "MODEL.VFNET",
    "musu": "MODEL.MUSU",
    "aploss_retinanet": "MODEL.AP_LOSS",
    "libra_faster_rcnn": "MODEL.ROI_HEADS",
}


def selected():
    value = os.environ.get("D2EXT_GPU_TRAIN_METHODS", "")
    chosen = ALL if value == "all" else [m for m in value.split(",") if m] or DEFAULT
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        raise ValueError(
            f"D2EXT_GPU_TRAIN_METHODS names unknown methods {unknown}; choose from {ALL} or 'all'"
        )
    return chosen


@pytest.mark.cuda
@pytest.mark.parametrize("method", ALL)
def test_amp_training_on_cuda_then_evaluation(method, tmp_path):
    if method not in selected():
        pytest.skip(f"not in D2EXT_GPU_TRAIN_METHODS (default {DEFAULT}; 'all' for every method)")
    config = os.path.join(CONFIGS, "Synthetic", f"{method}_R_18_FPN_tiny.yaml")
    log = run(
        "--config-file",
        config,
        "MODEL.DEVICE",
        "cuda",
        "SOLVER.AMP.ENABLED",
        "True",
        "SOLVER.MAX_ITER",
        "100",
        "SOLVER.CHECKPOINT_PERIOD",
        "100",
        "DATALOADER.NUM_WORKERS",
        "4",
        "DATASETS.TEST",
        "('d2ext_shapes_minival',)",
        f"{SCORE_KEY[method]}.SCORE_THRESH_TEST",
        "0.0",
        "OUTPUT_DIR",
        str(tmp_path),
        env={"OMP_NUM_THREADS": "4"},
    )
    assert "iter: 99" in log
    checkpoint = torch.load(
        os.path.join(str(tmp_path), "model_final.pth"), map_location="cpu", weights_only=False
    )
    assert (
        checkpoint["trainer"]["_trainer"]["grad_scaler"]["scale"] > 0
    )  # float16's GradScaler, saved
    assert "Evaluation results for bbox" in log and "| AP " in log
