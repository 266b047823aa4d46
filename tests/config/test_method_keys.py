"""d2ext.config's helpers set the class count and test threshold of whatever method a config
builds (issue #15: MODEL.ATSS.NUM_CLASSES was documented for every method)."""

import glob
import os

import pytest
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model

from d2ext.config import (
    get_cfg,
    merge_from_file,
    num_classes_key,
    score_thresh_key,
    set_num_classes,
    set_score_thresh,
)

TINY_YAML = sorted(glob.glob(os.path.join(CONFIGS, "Synthetic", "*.yaml")))
TINY_LAZY = sorted(glob.glob(os.path.join(CONFIGS, "Synthetic", "*.py")))


def _num_classes(model):
    return model.num_classes if hasattr(model, "num_classes") else model.roi_heads.num_classes


def _score_thresh(model):
    if hasattr(model, "test_score_thresh"):
        return model.test_score_thresh
    return model.roi_heads.box_predictor.test_score_thresh


@pytest.mark.parametrize("path", TINY_YAML, ids=os.path.basename)
def test_yaml_helpers_reach_the_model(path):
    cfg = merge_from_file(get_cfg(), path)
    set_num_classes(cfg, 3)
    set_score_thresh(cfg, 0.125)
    model = build_model(cfg)
    assert _num_classes(model) == 3 and _score_thresh(model) == 0.125
    assert num_classes_key(cfg).endswith(".NUM_CLASSES") and score_thresh_key(cfg).endswith(
        "SCORE_THRESH_TEST"
    )


@pytest.mark.parametrize("path", TINY_LAZY, ids=os.path.basename)
def test_lazy_helpers_reach_the_model(path):
    cfg = LazyConfig.load(path)
    set_num_classes(cfg, 3)
    set_score_thresh(cfg, 0.125)
    model = instantiate(cfg.model)
    assert _num_classes(model) == 3 and _score_thresh(model) == 0.125


def test_keys_of_each_meta_architecture():
    cfg = get_cfg()
    expected = {
        "ATSS": "MODEL.ATSS.NUM_CLASSES",
        "DynamicATSS": "MODEL.DYNAMIC_ATSS.NUM_CLASSES",
        "GFL": "MODEL.GFL.NUM_CLASSES",
        "VFNet": "MODEL.VFNET.NUM_CLASSES",
        "MuSu": "MODEL.MUSU.NUM_CLASSES",
        "APLossRetinaNet": "MODEL.RETINANET.NUM_CLASSES",
        "RetinaNet": "MODEL.RETINANET.NUM_CLASSES",
        "GeneralizedRCNN": "MODEL.ROI_HEADS.NUM_CLASSES",
    }
    for arch, key in expected.items():
        cfg.MODEL.META_ARCHITECTURE = arch
        assert num_classes_key(cfg) == key
    assert score_thresh_key(cfg) == "MODEL.ROI_HEADS.SCORE_THRESH_TEST"
    cfg.MODEL.META_ARCHITECTURE = "APLossRetinaNet"
    assert score_thresh_key(cfg) == "MODEL.AP_LOSS.SCORE_THRESH_TEST"


def test_unknown_meta_architecture_and_bad_values_are_errors():
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    with pytest.raises(KeyError, match="SemanticSegmentor"):
        set_num_classes(cfg, 3)
    cfg.MODEL.META_ARCHITECTURE = "GFL"
    with pytest.raises(ValueError, match=r"MODEL.GFL.NUM_CLASSES must be an integer >= 1, got 0"):
        set_num_classes(cfg, 0)
    with pytest.raises(
        ValueError, match=r"MODEL.GFL.SCORE_THRESH_TEST must be in \[0, 1\), got 1.5"
    ):
        set_score_thresh(cfg, 1.5)
