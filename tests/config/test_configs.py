"""Every yaml and lazy config under configs/ loads and builds its model; twins agree."""
import glob
import os

import pytest
import torch

from conftest import CONFIGS
from d2ext import model_zoo
from d2ext.config import get_cfg
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model

YAML_CONFIGS = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))
# Lazy leaves: the .py configs outside common/ (common/ holds pieces, not whole configs).
LAZY_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(CONFIGS, "**", "*.py"), recursive=True) if "/common/" not in p
)
TWINS = [p[: -len(".py")] for p in LAZY_CONFIGS if os.path.exists(p[: -len(".py")] + ".yaml")]


# Hyper-parameters the twins must agree on, where the model has them.
TWIN_ATTRIBUTES = (
    "num_classes", "topk", "loss_normalizer", "test_score_thresh", "test_topk_candidates",
    "test_nms_thresh", "max_detections_per_image", "reg_loss_weight", "focal_loss_alpha",
    "focal_loss_gamma", "ciou_anchor_weight", "ciou_pred_weight", "ciou_schedule",
    "ciou_schedule_iters", "cls_loss", "qfl_beta", "vfl_alpha", "vfl_gamma", "iou_loss_weight",
    "reg_max", "uses_dgqp", "loss_cls_weight", "loss_dfl_weight", "loss_box_weight", "dfl_target_eps",
    "vfl_iou_weighted", "loss_box_init_weight", "loss_box_refine_weight", "gate_thresh", "gate_shape",
    "mix_lambda", "rank_topk", "rank_weight", "rank_tau", "warmup_iters", "num_anchors_per_location",
)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def build_yaml(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    return cfg, build_model(cfg)


def test_configs_are_found():
    assert len(YAML_CONFIGS) >= 3 and len(LAZY_CONFIGS) >= 2 and TWINS


@pytest.mark.parametrize("path", YAML_CONFIGS, ids=lambda p: os.path.relpath(p, CONFIGS))
def test_yaml_config_builds(path):
    _, model = build_yaml(path)
    assert num_params(model) > 0


@pytest.mark.parametrize("path", LAZY_CONFIGS, ids=lambda p: os.path.relpath(p, CONFIGS))
def test_lazy_config_instantiates(path):
    cfg = LazyConfig.load(path)
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(cfg.keys())
    model = instantiate(cfg.model)
    assert num_params(model) > 0
    cfg.optimizer.params.model = model
    assert isinstance(instantiate(cfg.optimizer), torch.optim.Optimizer)


@pytest.mark.parametrize("stem", TWINS, ids=lambda p: os.path.relpath(p, CONFIGS))
def test_yaml_and_lazy_twins_agree(stem):
    cfg, yaml_model = build_yaml(stem + ".yaml")
    lazy = LazyConfig.load(stem + ".py")
    lazy_model = instantiate(lazy.model)
    assert type(yaml_model) is type(lazy_model)
    assert num_params(yaml_model) == num_params(lazy_model)
    compared = [a for a in TWIN_ATTRIBUTES if hasattr(yaml_model, a)]
    assert len(compared) >= 8
    for attr in compared:
        assert getattr(yaml_model, attr) == getattr(lazy_model, attr), attr
    assert yaml_model.head_in_features == lazy_model.head_in_features
    assert type(yaml_model.box2box_transform) is type(lazy_model.box2box_transform)
    if hasattr(yaml_model.box2box_transform, "weights"):
        assert yaml_model.box2box_transform.weights == tuple(lazy_model.box2box_transform.weights)
    for a, b in zip(yaml_model.anchor_generator.cell_anchors, lazy_model.anchor_generator.cell_anchors):
        torch.testing.assert_close(a, b)
    assert lazy.optimizer.lr == cfg.SOLVER.BASE_LR
    assert lazy.train.max_iter == cfg.SOLVER.MAX_ITER


def test_model_zoo_paths_and_errors():
    path = model_zoo.get_config_file("ATSS/atss_R_50_FPN_1x.yaml")
    assert os.path.isfile(path)
    assert model_zoo.get_config("ATSS/atss_R_50_FPN_1x.yaml").MODEL.META_ARCHITECTURE == "ATSS"
    assert "model" in model_zoo.get_config("ATSS/atss_R_50_FPN_1x.py")
    with pytest.raises(RuntimeError, match="not available in d2ext's model zoo"):
        model_zoo.get_config_file("ATSS/nope.yaml")
    with pytest.raises(NotImplementedError, match="no trained checkpoint"):
        model_zoo.get_config("ATSS/atss_R_50_FPN_1x.yaml", trained=True)


def test_model_zoo_get_builds_models():
    from d2ext.modeling import ATSS

    assert isinstance(model_zoo.get("Synthetic/atss_R_18_FPN_tiny.yaml"), ATSS)
    assert isinstance(model_zoo.get("Synthetic/atss_R_18_FPN_tiny.py"), ATSS)
