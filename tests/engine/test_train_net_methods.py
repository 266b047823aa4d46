"""tools/train_net.py on every method's tiny configs: a short yaml training run, --eval-only of
its checkpoint, and the lazy twin training and evaluating."""

import os

import pytest
from conftest import CONFIGS
from engine.test_train_net import FAST, run

METHODS = ["dynamic_atss", "gfl", "gflv2", "vfnet", "atss_vfl", "musu", "musu_direct"]
# After 1-2 iterations no class probability reaches the 0.05 test threshold yet: keep every
# candidate so the evaluation has detections to score.
SCORE_KEY = {
    "dynamic_atss": "MODEL.DYNAMIC_ATSS.SCORE_THRESH_TEST",
    "gfl": "MODEL.GFL.SCORE_THRESH_TEST",
    "gflv2": "MODEL.GFL.SCORE_THRESH_TEST",
    "vfnet": "MODEL.VFNET.SCORE_THRESH_TEST",
    "atss_vfl": "MODEL.ATSS.SCORE_THRESH_TEST",
    "musu": "MODEL.MUSU.SCORE_THRESH_TEST",
    "musu_direct": "MODEL.MUSU.SCORE_THRESH_TEST",
}


def tiny(method, ext):
    return os.path.join(CONFIGS, "Synthetic", f"{method}_R_18_FPN_tiny.{ext}")


@pytest.mark.parametrize("method", METHODS)
def test_yaml_trains_then_eval_only(method, tmp_path):
    out = str(tmp_path / "train")
    log = run(
        "--config-file", tiny(method, "yaml"), *FAST, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out
    )
    assert "Starting training from iteration 0" in log
    weights = os.path.join(out, "model_final.pth")
    assert os.path.isfile(weights)
    log = run(
        "--config-file",
        tiny(method, "yaml"),
        "--eval-only",
        "MODEL.WEIGHTS",
        weights,
        "INPUT.MIN_SIZE_TEST",
        "160",
        "DATASETS.TEST",
        "('d2ext_shapes_minival',)",
        SCORE_KEY[method],
        "0.0",
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    )
    assert "Evaluation results for bbox" in log and "| AP " in log


@pytest.mark.parametrize("method", METHODS)
def test_lazy_twin_trains_and_evaluates(method, tmp_path):
    log = run(
        "--config-file",
        tiny(method, "py"),
        "train.max_iter=1",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        f"train.output_dir={tmp_path}",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[192]",
        "dataloader.test.dataset.names=d2ext_shapes_minival",
        "dataloader.test.mapper.augmentations.0.short_edge_length=160",
        "model.test_score_thresh=0.0",
    )
    assert "Starting training from iteration 0" in log
    assert os.path.isfile(os.path.join(str(tmp_path), "model_final.pth"))
    assert "Evaluation results for bbox" in log and "| AP " in log
