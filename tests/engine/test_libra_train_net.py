"""tools/train_net.py on the tiny Libra R-CNN config: a few iterations, then --eval-only."""

import json
import os

import pytest
from conftest import CONFIGS
from test_train_net import FAST, run

LIBRA_TINY = os.path.join(CONFIGS, "Synthetic", "libra_faster_rcnn_R_18_FPN_tiny.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("libra"))
    log = run("--config-file", LIBRA_TINY, *FAST, "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", out)
    return out, log


def test_train_logs_losses_and_sampler_stats(trained):
    out, log = trained
    assert "Starting training from iteration 0" in log
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    last = metrics[-1]
    for key in (
        "loss_cls",
        "loss_box_reg",
        "loss_rpn_cls",
        "loss_rpn_loc",
        "roi_head/num_neg_iou_bin0",
        "roi_head/num_neg_iou_bin1",
        "roi_head/max_pos_samples_per_gt",
    ):
        assert key in last, key


def test_eval_only_of_the_checkpoint(trained, tmp_path):
    out, _ = trained
    log = run(
        "--config-file",
        LIBRA_TINY,
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
    assert "Evaluation results for bbox" in log and "AP50" in log
    assert os.path.isfile(os.path.join(str(tmp_path), "inference", "coco_instances_results.json"))
