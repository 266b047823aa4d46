"""tools/demo.py on a folder of synthetic validation images: pictures written, every kept
detection at or above --confidence-threshold; the method-keys helper."""

import json
import os
import shutil

import pytest
from conftest import CONFIGS, TINY_CONFIG, tiny_cfg

from d2ext.config.method_keys import num_classes_key, score_thresh_key

THRESHOLD = 0.1


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny ATSS checkpoint: random init whose classifier bias lets some candidates pass."""
    from detectron2.checkpoint import DetectionCheckpointer
    from export_checks import detecting_model

    path = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(detecting_model("atss"), save_dir=str(path)).save("model")
    return str(path / "model.pth")


def _val_folder(tmp_path, count=3):
    from detectron2.data import DatasetCatalog

    folder = tmp_path / "images"
    folder.mkdir()
    for record in DatasetCatalog.get("d2ext_shapes_val")[:count]:  # generated on first use
        shutil.copy(record["file_name"], folder)
    return folder


def test_demo_folder_respects_threshold(tmp_path, weights):
    from d2ext.tools.demo import main

    folder = _val_folder(tmp_path)
    out = tmp_path / "out"
    records = main(
        [
            "--config-file",
            TINY_CONFIG,
            "--input",
            str(folder),
            "--output",
            str(out),
            "--confidence-threshold",
            str(THRESHOLD),
            "--save-json",
            "--opts",
            "MODEL.WEIGHTS",
            weights,
        ]
    )
    assert sorted(os.listdir(out)) == sorted(os.listdir(folder)) + ["predictions.json"]
    with open(out / "predictions.json") as f:
        assert json.load(f) == records
    scores = [s for r in records for s in r["scores"]]
    assert scores, "the demo drew nothing: the threshold check would be empty"
    assert min(scores) >= THRESHOLD


def test_demo_bad_input(tmp_path, weights):
    from d2ext.errors import ConfigError, DataError
    from d2ext.tools.demo import main

    with pytest.raises(DataError, match="nothing_here"):
        main(
            [
                "--debug",
                "--config-file",
                TINY_CONFIG,
                "--input",
                str(tmp_path / "nothing_here"),
                "--opts",
                "MODEL.WEIGHTS",
                weights,
            ]
        )
    with pytest.raises(ConfigError, match="1.5"):
        main(
            [
                "--debug",
                "--config-file",
                TINY_CONFIG,
                "--input",
                str(tmp_path),
                "--confidence-threshold",
                "1.5",
            ]
        )
    # Without --debug: one line naming the value, exit status 1.
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--config-file",
                TINY_CONFIG,
                "--input",
                str(tmp_path),
                "--confidence-threshold",
                "1.5",
            ]
        )
    assert exit_info.value.code == 1


@pytest.mark.parametrize(
    "config, classes_node, thresh_node",
    [
        ("Synthetic/atss_R_18_FPN_tiny.yaml", "ATSS", "ATSS"),
        ("Synthetic/dynamic_atss_R_18_FPN_tiny.yaml", "DYNAMIC_ATSS", "DYNAMIC_ATSS"),
        ("Synthetic/gflv2_R_18_FPN_tiny.yaml", "GFL", "GFL"),
        ("Synthetic/vfnet_R_18_FPN_tiny.yaml", "VFNET", "VFNET"),
        ("Synthetic/musu_R_18_FPN_tiny.yaml", "MUSU", "MUSU"),
        # AP-loss RetinaNet: architecture from MODEL.RETINANET, test keys from MODEL.AP_LOSS.
        ("Synthetic/aploss_retinanet_R_18_FPN_tiny.yaml", "RETINANET", "AP_LOSS"),
        ("Synthetic/retinanet_R_18_FPN_tiny.yaml", "RETINANET", "RETINANET"),
        ("Synthetic/libra_faster_rcnn_R_18_FPN_tiny.yaml", "ROI_HEADS", "ROI_HEADS"),
    ],
)
def test_method_keys(config, classes_node, thresh_node):
    cfg = tiny_cfg(os.path.join(CONFIGS, config))
    assert score_thresh_key(cfg) == f"MODEL.{thresh_node}.SCORE_THRESH_TEST"
    assert num_classes_key(cfg) == f"MODEL.{classes_node}.NUM_CLASSES"
    cfg.MODEL.META_ARCHITECTURE = "NoSuchArch"
    with pytest.raises(KeyError, match="NoSuchArch"):
        score_thresh_key(cfg)
