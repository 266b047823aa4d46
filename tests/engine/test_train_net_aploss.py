"""tools/train_net.py on the tiny AP-loss RetinaNet: a yaml run through the SSD-style pipeline
(INPUT.TRAIN_PIPELINE), --eval-only of its checkpoint, and the lazy twin."""

import json
import os

import pytest
from conftest import CONFIGS
from test_train_net import FAST, run

TINY = os.path.join(CONFIGS, "Synthetic", "aploss_retinanet_R_18_FPN_tiny.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("aploss"))
    log = run(
        "--config-file",
        TINY,
        *FAST,
        "SOLVER.MAX_ITER",
        "2",
        "INPUT.TRAIN_PIPELINE",
        "ssd",
        "INPUT.SSD.SIZE",
        "192",
        "OUTPUT_DIR",
        out,
    )
    return out, log


def test_yaml_training_with_the_ssd_pipeline_logs_the_ranking(trained):
    out, log = trained
    assert "Starting training from iteration 0" in log
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    for key in (
        "loss_cls",
        "loss_box_reg",
        "ap_loss/num_pos",
        "ap_loss/num_neg",
        "ap_loss/num_active_neg",
        "ap_loss/interpolated_ap",
    ):
        assert key in metrics[-1], key


def test_eval_only(trained, tmp_path):
    out, _ = trained
    log = run(
        "--config-file",
        TINY,
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
    assert os.path.isfile(os.path.join(str(tmp_path), "inference", "coco_instances_results.json"))


def test_lazy_config_trains_and_evaluates(tmp_path):
    log = run(
        "--config-file",
        TINY[: -len(".yaml")] + ".py",
        "train.max_iter=1",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        f"train.output_dir={tmp_path}",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[192]",
        "dataloader.test.dataset.names=d2ext_shapes_minival",
        "dataloader.test.mapper.augmentations.0.short_edge_length=192",
    )
    assert "Starting training from iteration 0" in log
    assert "Evaluation results for bbox" in log
