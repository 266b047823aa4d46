"""Probe table of issue #15: bad configs and files, each with the error it must give, checked
where the model / data loaders / config are built (no training step). Add a row when a key gets
validated."""

import argparse
import os

import pytest
import torch
from conftest import CONFIGS, tiny_cfg

TINY = os.path.join(CONFIGS, "Synthetic", "{}_R_18_FPN_tiny.yaml")
LAZY_TINY = os.path.join(CONFIGS, "Synthetic", "{}_R_18_FPN_tiny.py")
MINIVAL = ("DATASETS.TRAIN", "('d2ext_shapes_minival',)", "DATALOADER.NUM_WORKERS", "0")


def build_model_and_loaders(method, opts):
    """What d2ext's Trainer builds before the first step: the model, the train loader and a
    test loader of the tiny config with opts."""
    from d2ext.engine import Trainer

    cfg = tiny_cfg(TINY.format(method), *MINIVAL, *opts)
    Trainer.build_model(cfg)
    Trainer.build_train_loader(cfg)
    Trainer.build_test_loader(cfg, "d2ext_shapes_minival")


def lazy_setup(method, overrides, tmp_path):
    from d2ext.engine import setup

    args = argparse.Namespace(
        config_file=LAZY_TINY.format(method),
        opts=[*overrides, f"train.output_dir={tmp_path}"],
        eval_only=False,
        resume=False,
        num_gpus=1,
        num_machines=1,
        machine_rank=0,
        dist_url="auto",
    )
    return setup(args)


# (id, method, opts, exception, expected text: every piece must be in the message)
YAML_PROBES = [
    (
        "pixel_std_zero_vfnet",
        "vfnet",
        ["MODEL.PIXEL_STD", "[0, 0, 0]"],
        ValueError,
        ["MODEL.PIXEL_STD", "[0, 0, 0]", "> 0"],
    ),
    (
        "pixel_std_zero_atss",
        "atss",
        ["MODEL.PIXEL_STD", "[1, 0, 1]"],
        ValueError,
        ["MODEL.PIXEL_STD", "[1, 0, 1]"],
    ),
    (
        "pixel_std_zero_rcnn",
        "faster_rcnn",
        ["MODEL.PIXEL_STD", "[0, 0, 0]"],
        ValueError,
        ["MODEL.PIXEL_STD"],
    ),
    (
        "num_classes_atss",
        "atss",
        ["MODEL.ATSS.NUM_CLASSES", "4"],
        ValueError,
        ["MODEL.ATSS.NUM_CLASSES is 4", "has 5 classes"],
    ),
    (
        "num_classes_dynamic_atss",
        "dynamic_atss",
        ["MODEL.DYNAMIC_ATSS.NUM_CLASSES", "3"],
        ValueError,
        ["MODEL.DYNAMIC_ATSS.NUM_CLASSES is 3", "has 5 classes"],
    ),
    (
        "num_classes_gfl",
        "gfl",
        ["MODEL.GFL.NUM_CLASSES", "4"],
        ValueError,
        ["MODEL.GFL.NUM_CLASSES is 4", "has 5 classes"],
    ),
    (
        "num_classes_vfnet",
        "vfnet",
        ["MODEL.VFNET.NUM_CLASSES", "4"],
        ValueError,
        ["MODEL.VFNET.NUM_CLASSES is 4"],
    ),
    (
        "num_classes_musu",
        "musu",
        ["MODEL.MUSU.NUM_CLASSES", "2"],
        ValueError,
        ["MODEL.MUSU.NUM_CLASSES is 2"],
    ),
    (
        "num_classes_too_many",
        "atss",
        ["MODEL.ATSS.NUM_CLASSES", "6"],
        ValueError,
        ["MODEL.ATSS.NUM_CLASSES is 6", "has 5 classes"],
    ),
    (
        "num_classes_aploss",
        "aploss_retinanet",
        ["MODEL.RETINANET.NUM_CLASSES", "4"],
        ValueError,
        ["MODEL.RETINANET.NUM_CLASSES is 4"],
    ),
    (
        "num_classes_libra",
        "libra_faster_rcnn",
        ["MODEL.ROI_HEADS.NUM_CLASSES", "4"],
        ValueError,
        ["MODEL.ROI_HEADS.NUM_CLASSES is 4"],
    ),
    # The key the README used to give for every method: GFL ignores it, GFL's own key is named.
    (
        "num_classes_wrong_method_key",
        "gfl",
        ["MODEL.ATSS.NUM_CLASSES", "5", "MODEL.GFL.NUM_CLASSES", "80"],
        ValueError,
        ["MODEL.GFL.NUM_CLASSES is 80"],
    ),
    # Item 5: numeric keys checked when the model is built (d2ext.modeling.input_checks).
    (
        "musu_topk_zero",
        "musu",
        ["MODEL.MUSU.TOPK", "0"],
        ValueError,
        ["MODEL.MUSU.TOPK", "got 0", "integer >= 1"],
    ),
    (
        "gfl_reg_max_zero",
        "gfl",
        ["MODEL.GFL.REG_MAX", "0"],
        ValueError,
        ["MODEL.GFL.REG_MAX (model.head.reg_max)", "got 0", ">= 1"],
    ),
    (
        "num_classes_zero_atss",
        "atss",
        ["MODEL.ATSS.NUM_CLASSES", "0"],
        ValueError,
        ["MODEL.ATSS.NUM_CLASSES", "got 0", ">= 1"],
    ),
    (
        "num_classes_zero_vfnet",
        "vfnet",
        ["MODEL.VFNET.NUM_CLASSES", "0"],
        ValueError,
        ["MODEL.VFNET.NUM_CLASSES", "got 0"],
    ),
    (
        "num_classes_zero_aploss",
        "aploss_retinanet",
        ["MODEL.RETINANET.NUM_CLASSES", "0"],
        ValueError,
        ["MODEL.RETINANET.NUM_CLASSES", "got 0"],
    ),
    (
        "prior_prob_zero_gfl",
        "gfl",
        ["MODEL.GFL.PRIOR_PROB", "0.0"],
        ValueError,
        ["MODEL.GFL.PRIOR_PROB", "got 0.0", "in (0, 1)"],
    ),
    (
        "prior_prob_one_atss",
        "atss",
        ["MODEL.ATSS.PRIOR_PROB", "1.0"],
        ValueError,
        ["MODEL.ATSS.PRIOR_PROB", "got 1.0"],
    ),
    (
        "prior_prob_zero_aploss",
        "aploss_retinanet",
        ["MODEL.RETINANET.PRIOR_PROB", "0.0"],
        ValueError,
        ["MODEL.RETINANET.PRIOR_PROB", "in (0, 1)"],
    ),
    (
        "aploss_iou_thresholds_order",
        "aploss_retinanet",
        ["MODEL.AP_LOSS.IOU_THRESHOLDS", "[0.5, 0.4]"],
        ValueError,
        ["MODEL.AP_LOSS.IOU_THRESHOLDS", "increasing", "[0.5, 0.4]"],
    ),
    (
        "aploss_iou_thresholds_range",
        "aploss_retinanet",
        ["MODEL.AP_LOSS.IOU_THRESHOLDS", "[0.4, 1.5]"],
        ValueError,
        ["MODEL.AP_LOSS.IOU_THRESHOLDS", "in [0, 1]"],
    ),
    (
        "atss_bbox_reg_weights_zero",
        "atss",
        ["MODEL.ATSS.BBOX_REG_WEIGHTS", "(0.0, 0.0, 0.0, 0.0)"],
        ValueError,
        ["MODEL.ATSS.BBOX_REG_WEIGHTS", "> 0", "[0.0, 0.0, 0.0, 0.0]"],
    ),
    (
        "aploss_bbox_reg_weights_zero",
        "aploss_retinanet",
        ["MODEL.AP_LOSS.BBOX_REG_WEIGHTS", "(10.0, 10.0, 0.0, 5.0)"],
        ValueError,
        ["MODEL.AP_LOSS.BBOX_REG_WEIGHTS", "> 0"],
    ),
    (
        "focal_gamma_negative",
        "atss",
        ["MODEL.ATSS.FOCAL_LOSS_GAMMA", "-1.0"],
        ValueError,
        ["MODEL.ATSS.FOCAL_LOSS_GAMMA", "got -1.0", ">= 0"],
    ),
    (
        "focal_alpha_above_one",
        "atss",
        ["MODEL.ATSS.FOCAL_LOSS_ALPHA", "1.5"],
        ValueError,
        ["MODEL.ATSS.FOCAL_LOSS_ALPHA", "got 1.5", "<= 1"],
    ),
    (
        "ciou_pred_weight_negative",
        "dynamic_atss",
        ["MODEL.DYNAMIC_ATSS.CIOU_PRED_WEIGHT", "-1.0"],
        ValueError,
        ["MODEL.DYNAMIC_ATSS.CIOU_PRED_WEIGHT", "got -1.0", ">= 0"],
    ),
    (
        "musu_gate_thresh",
        "musu",
        ["MODEL.MUSU.GATE_THRESH", "2.0"],
        ValueError,
        ["MODEL.MUSU.GATE_THRESH", "got 2.0", "in [0, 1]"],
    ),
    (
        "aploss_smooth_l1_beta_negative",
        "aploss_retinanet",
        ["MODEL.AP_LOSS.SMOOTH_L1_BETA", "-1.0"],
        ValueError,
        ["MODEL.AP_LOSS.SMOOTH_L1_BETA", "got -1.0", ">= 0"],
    ),
    (
        "gfl_qfl_beta_negative",
        "gfl",
        ["MODEL.GFL.QFL_BETA", "-1.0"],
        ValueError,
        ["MODEL.GFL.QFL_BETA", "got -1.0"],
    ),
    (
        "vfnet_gamma_negative",
        "vfnet",
        ["MODEL.VFNET.VFL_GAMMA", "-2.0"],
        ValueError,
        ["MODEL.VFNET.VFL_GAMMA", "got -2.0"],
    ),
    (
        "vfnet_reg_denoms_zero",
        "vfnet",
        ["MODEL.VFNET.REG_DENOMS", "(64.0, 0.0, 256.0, 512.0, 1024.0)"],
        ValueError,
        ["MODEL.VFNET.REG_DENOMS", "> 0"],
    ),
    (
        "score_thresh_above_one",
        "atss",
        ["MODEL.ATSS.SCORE_THRESH_TEST", "1.5"],
        ValueError,
        ["MODEL.ATSS.SCORE_THRESH_TEST", "in [0, 1)", "got 1.5"],
    ),
    (
        "num_convs_negative",
        "gfl",
        ["MODEL.GFL.NUM_CONVS", "-1"],
        ValueError,
        ["MODEL.GFL.NUM_CONVS", "got -1"],
    ),
    (
        "musu_warmup_negative",
        "musu",
        ["MODEL.MUSU.WARMUP_ITERS", "-5"],
        ValueError,
        ["MODEL.MUSU.WARMUP_ITERS", "got -5"],
    ),
    (
        "ssd_zoom_out_prob",
        "aploss_retinanet",
        ["INPUT.TRAIN_PIPELINE", "ssd", "INPUT.SSD.ZOOM_OUT_PROB", "1.5"],
        ValueError,
        ["INPUT.SSD.ZOOM_OUT_PROB", "in [0, 1]", "got 1.5"],
    ),
    (
        "ssd_contrast_range_order",
        "aploss_retinanet",
        ["INPUT.TRAIN_PIPELINE", "ssd", "INPUT.SSD.CONTRAST_RANGE", "(1.5, 0.5)"],
        ValueError,
        ["INPUT.SSD.CONTRAST_RANGE", "increasing"],
    ),
    (
        "libra_balanced_l1_beta_zero",
        "libra_faster_rcnn",
        ["MODEL.LIBRA.BALANCED_L1_BETA", "0.0"],
        ValueError,
        ["MODEL.LIBRA.BALANCED_L1_BETA", "> 0", "got 0.0"],
    ),
]


@pytest.mark.parametrize(
    "method,opts,exc,texts", [p[1:] for p in YAML_PROBES], ids=[p[0] for p in YAML_PROBES]
)
def test_bad_yaml_config_fails_when_built(method, opts, exc, texts):
    with pytest.raises(exc) as info:
        build_model_and_loaders(method, opts)
    for text in texts:
        assert text in str(info.value)


LAZY_PROBES = [
    (
        "typo_train",
        "atss",
        ["train.max_itr=5"],
        KeyError,
        ["'train.max_itr'", "did you mean 'train.max_iter'"],
    ),
    (
        "typo_model",
        "gfl",
        ["model.num_clases=3"],
        KeyError,
        ["'model.num_clases'", "'model.num_classes'"],
    ),
    (
        "typo_lazycall_arg",
        "atss",
        ["model.backbone.bottom_up.widht=16"],
        KeyError,
        ["model.backbone.bottom_up.widht"],
    ),
    (
        "typo_rcnn",
        "libra_faster_rcnn",
        ["model.roi_heads.num_clases=3"],
        KeyError,
        ["'model.roi_heads.num_classes'"],
    ),
]


@pytest.mark.parametrize(
    "method,overrides,exc,texts", [p[1:] for p in LAZY_PROBES], ids=[p[0] for p in LAZY_PROBES]
)
def test_bad_lazy_override_fails(method, overrides, exc, texts, tmp_path):
    with pytest.raises(exc) as info:
        lazy_setup(method, overrides, tmp_path)
    for text in texts:
        assert text in str(info.value)


# Lazy configs build the same objects: the message names the lazy argument too.
LAZY_BUILD_PROBES = [
    ("lazy_gfl_reg_max", "gfl", ["model.head.reg_max=0"], ["model.head.reg_max", "got 0"]),
    ("lazy_atss_topk", "atss", ["model.topk=0"], ["(model.topk)", "got 0"]),
    (
        "lazy_atss_head_classes",
        "atss",
        ["model.head.num_classes=0"],
        ["model.head.num_classes", "got 0"],
    ),
    ("lazy_musu_gate", "musu", ["model.gate_thresh=2.0"], ["(model.gate_thresh)", "in [0, 1]"]),
]


@pytest.mark.parametrize(
    "method,overrides,texts",
    [p[1:] for p in LAZY_BUILD_PROBES],
    ids=[p[0] for p in LAZY_BUILD_PROBES],
)
def test_bad_lazy_value_fails_when_built(method, overrides, texts, tmp_path):
    from detectron2.config import instantiate

    cfg = lazy_setup(method, overrides, tmp_path)
    with pytest.raises(ValueError) as info:
        instantiate(cfg.model)
    for text in texts:
        assert text in str(info.value)


def test_lazy_overrides_of_existing_keys_and_lazycall_arguments_pass(tmp_path):
    from detectron2.config import LazyConfig

    from d2ext.config.lazy_overrides import apply_overrides

    cfg = LazyConfig.load(LAZY_TINY.format("atss"))
    # freeze_at is not set in the config but is an argument of the LazyCall's target.
    apply_overrides(
        cfg,
        ["train.max_iter=3", "model.num_classes=4", "dataloader.train.dataset.filter_empty=False"],
    )
    assert cfg.train.max_iter == 3 and cfg.model.num_classes == 4
    assert cfg.dataloader.train.dataset.filter_empty is False


def test_lazy_loader_checks_num_classes(tmp_path):
    from detectron2.config import instantiate

    from d2ext.engine.lazy import check_loader_classes

    cfg = lazy_setup(
        "atss",
        ["model.num_classes=4", "dataloader.test.dataset.names=d2ext_shapes_minival"],
        tmp_path,
    )
    model = instantiate(cfg.model)
    with pytest.raises(
        ValueError, match=r"model.num_classes is 4, but dataset 'd2ext_shapes_minival' has 5"
    ):
        check_loader_classes(cfg, model, "test")


# (id, file content, expected text); {path} is the file written.
FILE_PROBES = [
    (
        "yaml_python_tag",
        "cfg.yaml",
        b"MODEL:\n  DEVICE: !!python/object/apply:os.getcwd []\n",
        ["{path}", "python/object/apply", "--allow-unsafe-yaml"],
    ),
    ("yaml_base_python_tag", "child.yaml", None, ["evil_base.yaml", "python/object/apply"]),
    (
        "checkpoint_garbage",
        "bad.pth",
        b"this is not a checkpoint" * 4,
        ["{path}", "is not a valid checkpoint"],
    ),
    ("checkpoint_truncated", "trunc.pth", "truncated", ["{path}", "is not a valid checkpoint"]),
]


@pytest.mark.parametrize(
    "name,content,texts", [p[1:] for p in FILE_PROBES], ids=[p[0] for p in FILE_PROBES]
)
def test_bad_file_fails_naming_it(name, content, texts, tmp_path):
    path = str(tmp_path / name)
    if name == "child.yaml":
        (tmp_path / "evil_base.yaml").write_bytes(b"SEED: !!python/object/apply:os.getpid []\n")
        content = b'_BASE_: "evil_base.yaml"\n'
    if content == "truncated":
        torch.save({"model": {"w": torch.ones(100)}}, path)
        data = open(path, "rb").read()
        content = data[: len(data) // 2]
    with open(path, "wb") as f:
        f.write(content)
    if name.endswith(".yaml"):
        from d2ext.engine import setup

        args = argparse.Namespace(config_file=path, opts=["OUTPUT_DIR", str(tmp_path / "out")])
        with pytest.raises(ValueError) as info:
            setup(args)
    else:
        from d2ext.checkpoint import SafeResumeCheckpointer

        with pytest.raises(ValueError) as info:
            SafeResumeCheckpointer(torch.nn.Linear(2, 2), str(tmp_path)).resume_or_load(
                path, resume=False
            )
    message = str(info.value)
    for text in texts:
        assert text.format(path=path) in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
