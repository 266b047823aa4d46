"""Every yaml and lazy config under configs/ loads and builds its model; twins agree."""

import glob
import os

import pytest
import torch
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model

from d2ext import model_zoo
from d2ext.config import get_cfg

YAML_CONFIGS = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))
# Lazy leaves: the .py configs outside common/ (common/ holds pieces, not whole configs).
LAZY_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(CONFIGS, "**", "*.py"), recursive=True) if "/common/" not in p
)
TWINS = [p[: -len(".py")] for p in LAZY_CONFIGS if os.path.exists(p[: -len(".py")] + ".yaml")]


# Hyper-parameters the twins must agree on, where the model has them.
TWIN_ATTRIBUTES = (
    "num_classes",
    "topk",
    "loss_normalizer",
    "test_score_thresh",
    "test_topk_candidates",
    "test_nms_thresh",
    "max_detections_per_image",
    "reg_loss_weight",
    "focal_loss_alpha",
    "focal_loss_gamma",
    "ciou_anchor_weight",
    "ciou_pred_weight",
    "ciou_schedule",
    "ciou_schedule_iters",
    "cls_loss",
    "qfl_beta",
    "vfl_alpha",
    "vfl_gamma",
    "iou_loss_weight",
    "reg_max",
    "uses_dgqp",
    "loss_cls_weight",
    "loss_dfl_weight",
    "loss_box_weight",
    "dfl_target_eps",
    "smooth_l1_beta",
    "delta",
    "interpolated",
    "ranking_images",
    "vfl_iou_weighted",
    "loss_box_init_weight",
    "loss_box_refine_weight",
    "gate_thresh",
    "gate_shape",
    "mix_lambda",
    "rank_topk",
    "rank_weight",
    "rank_tau",
    "warmup_iters",
    "num_anchors_per_location",
    "use_atss",
    "fcos_size_bounds",
    "test_topk_by",
    "loc_weight_sum_min",
    "quality_iou_plus_one",
    "test_score",
    "input_format",
    "valid_anchors_pad_divisor",
)


# R-CNN twins (Faster R-CNN, Libra R-CNN): RPN, ROI-heads and box-predictor settings.
RPN_ATTRIBUTES = (
    "in_features",
    "batch_size_per_image",
    "positive_fraction",
    "pre_nms_topk",
    "post_nms_topk",
    "nms_thresh",
    "neg_pos_ub",
)
ROI_ATTRIBUTES = (
    "num_classes",
    "batch_size_per_image",
    "positive_fraction",
    "proposal_append_gt",
    "box_in_features",
    "iou_balanced_neg",
    "num_iou_bins",
    "floor_thresh",
    "floor_fraction",
    "instance_balanced_pos",
)
PREDICTOR_ATTRIBUTES = (
    "box_reg_loss_type",
    "smooth_l1_beta",
    "test_score_thresh",
    "test_nms_thresh",
    "test_topk_per_image",
    "balanced_l1_alpha",
    "balanced_l1_gamma",
    "balanced_l1_beta",
)


def rcnn_hyperparameters(model):
    """The key settings of a GeneralizedRCNN (those its parts have), and its RPN anchors."""

    def pick(obj, names, prefix):
        return {prefix + n: getattr(obj, n) for n in names if hasattr(obj, n)}

    rpn, heads = model.proposal_generator, model.roi_heads
    values = {"backbone": type(model.backbone).__name__}
    values.update(pick(rpn, RPN_ATTRIBUTES, "rpn."), **pick(heads, ROI_ATTRIBUTES, "roi."))
    values.update(pick(heads.box_predictor, PREDICTOR_ATTRIBUTES, "box."))
    values["box.weights"] = tuple(heads.box_predictor.box2box_transform.weights)
    values["rpn.weights"] = tuple(rpn.box2box_transform.weights)
    values["rpn.anchor_offset"] = rpn.anchor_generator.offset
    values["roi.pooler"] = [
        (type(p).__name__, getattr(p, "sampling_ratio", None))
        for p in heads.box_pooler.level_poolers
    ]
    return values, list(rpn.anchor_generator.cell_anchors)


def top_block_layout(backbone):
    """Where P6 comes from and the ReLUs before P6 / P7 (Detectron2's LastLevelP6P7 has the
    ReLU before P7 only)."""
    top = backbone.top_block
    return (
        type(top).__name__,
        getattr(top, "in_feature", None),
        getattr(top, "relu_before_p6", False),
        getattr(top, "relu_before_p7", True),
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
    if hasattr(yaml_model, "roi_heads"):
        (yaml_values, yaml_anchors), (lazy_values, lazy_anchors) = map(
            rcnn_hyperparameters, (yaml_model, lazy_model)
        )
        assert yaml_values.keys() == lazy_values.keys()
        for key in yaml_values:
            assert yaml_values[key] == lazy_values[key], key
    else:
        compared = [a for a in TWIN_ATTRIBUTES if hasattr(yaml_model, a)]
        assert len(compared) >= 8
        for attr in compared:
            assert getattr(yaml_model, attr) == getattr(lazy_model, attr), attr
        assert yaml_model.head_in_features == lazy_model.head_in_features
        assert type(yaml_model.box2box_transform) is type(lazy_model.box2box_transform)
        if hasattr(yaml_model.box2box_transform, "weights"):
            assert yaml_model.box2box_transform.weights == tuple(
                lazy_model.box2box_transform.weights
            )
        yaml_anchors = yaml_model.anchor_generator.cell_anchors
        lazy_anchors = lazy_model.anchor_generator.cell_anchors
        assert yaml_model.anchor_generator.offset == lazy_model.anchor_generator.offset
        assert top_block_layout(yaml_model.backbone) == top_block_layout(lazy_model.backbone)
    for a, b in zip(yaml_anchors, lazy_anchors, strict=True):
        torch.testing.assert_close(a, b)
    # Input: padding, normalisation (the MMDet/ configs' differ from Detectron2's defaults).
    assert yaml_model.backbone.size_divisibility == lazy_model.backbone.size_divisibility
    torch.testing.assert_close(yaml_model.pixel_mean, lazy_model.pixel_mean, rtol=0, atol=0)
    torch.testing.assert_close(yaml_model.pixel_std, lazy_model.pixel_std, rtol=0, atol=0)
    assert lazy.optimizer.lr == cfg.SOLVER.BASE_LR
    assert lazy.train.max_iter == cfg.SOLVER.MAX_ITER


def test_model_zoo_paths_and_errors():
    path = model_zoo.get_config_file("ATSS/atss_R_50_FPN_1x.yaml")
    assert os.path.isfile(path)
    assert model_zoo.get_config("ATSS/atss_R_50_FPN_1x.yaml").MODEL.META_ARCHITECTURE == "ATSS"
    assert "model" in model_zoo.get_config("ATSS/atss_R_50_FPN_1x.py")
    with pytest.raises(RuntimeError, match="not available in d2ext's model zoo"):
        model_zoo.get_config_file("ATSS/nope.yaml")
    with pytest.raises(
        RuntimeError, match="no published checkpoint for ATSS/atss_R_50_FPN_1x.yaml"
    ):
        model_zoo.get_config("ATSS/atss_R_50_FPN_1x.yaml", trained=True)


@pytest.mark.parametrize("name", ["atss", "gfl", "vfnet"])
def test_model_zoo_published_checkpoints(name):
    """MODEL_ZOO.md's rows: each config with a published checkpoint gets its URL as weights."""
    config = f"MMDet/{name}_r50_fpn_1x_coco"
    url = model_zoo.get_checkpoint_url(config + ".yaml")
    assert url.startswith("https://download.openmmlab.com/mmdetection/v2.0/")
    assert url == model_zoo.get_checkpoint_url(config + ".py")
    assert model_zoo.get_config(config + ".yaml", trained=True).MODEL.WEIGHTS == url
    assert model_zoo.get_config(config + ".py", trained=True).train.init_checkpoint == url
    with open(os.path.join(os.path.dirname(CONFIGS), "MODEL_ZOO.md")) as f:
        assert url in f.read()


def test_model_zoo_offline_error_names_the_url(monkeypatch):
    from detectron2.utils.file_io import PathManager

    from d2ext.errors import MissingWeightsError

    def offline(path, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(PathManager, "get_local_path", offline)
    url = model_zoo.get_checkpoint_url("MMDet/atss_r50_fpn_1x_coco.yaml")
    with pytest.raises(MissingWeightsError, match="could not download " + url.replace(".", r"\.")):
        model_zoo.get("MMDet/atss_r50_fpn_1x_coco.yaml", trained=True)


def test_model_zoo_get_builds_models():
    from d2ext.modeling import ATSS

    assert isinstance(model_zoo.get("Synthetic/atss_R_18_FPN_tiny.yaml"), ATSS)
    assert isinstance(model_zoo.get("Synthetic/atss_R_18_FPN_tiny.py"), ATSS)
