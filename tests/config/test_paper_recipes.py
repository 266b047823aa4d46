"""The paper recipes beyond R-50 1x of the methods without an mmdetection checkpoint: DynamicATSS
and MuSu on ATSS's strongest recipe (ResNeXt-101 64x4d with DCNv2 in res4-res5, 2x with the short
side drawn from 640..800), AP-loss RetinaNet R-101 (the released code's default). Yaml and lazy
twins build the same backbone and keep their method's reference choices, and train with the same
resize, schedule and weights (tests/config/test_configs.py builds every config and compares the
heads' settings). Build only: no forward pass."""

import os

import pytest
from conftest import CONFIGS
from detectron2.checkpoint.catalog import ModelCatalog
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model

from d2ext import model_zoo
from d2ext.config import get_cfg
from d2ext.data import build_train_mapper

X101_DCN = "X101_DCN"
R101 = "R101"
RECIPES = {
    "DynamicATSS/dynamic_atss_dcnv2_X_101_64x4d_FPN_2x": X101_DCN,
    "MuSu/musu_dcnv2_X_101_64x4d_FPN_2x": X101_DCN,
    "APLoss/aploss_retinanet_R_101_FPN_100e_512": R101,
}
# Per stage (res2..res5): blocks, deformable 3x3 convs, their weight groups, bottleneck width.
BACKBONES = {
    X101_DCN: [(3, False, 64, 256), (4, False, 64, 512), (23, True, 64, 1024), (3, True, 64, 2048)],
    R101: [(3, False, 1, 64), (4, False, 1, 128), (23, False, 1, 256), (3, False, 1, 512)],
}
# SOLVER.STEPS, MAX_ITER
SCHEDULES = {X101_DCN: ((120000, 160000), 180000), R101: ((439800, 586400), 733000)}
WEIGHTS = {
    X101_DCN: "catalog://ImageNetPretrained/FAIR/X-101-64x4d",
    R101: "detectron2://ImageNetPretrained/MSRA/R-101.pkl",
}


def yaml_cfg(stem):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, stem + ".yaml"))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def lazy_cfg(stem):
    return LazyConfig.load(os.path.join(CONFIGS, stem + ".py"))


def describe_resnet(model):
    """Per stage: blocks, whether they are deformable (modulated), conv2's groups and width; and
    the stride of every block's 1x1 / 3x3 conv."""
    resnet = model.backbone.bottom_up
    stages, strides = [], []
    for stage in resnet.stages:
        blocks = list(stage.children())
        deform = [getattr(b, "deform_modulated", None) for b in blocks]
        assert len(set(deform)) == 1, deform
        conv2 = blocks[0].conv2
        stages.append((len(blocks), deform[0], conv2.groups, conv2.out_channels))
        strides += [(b.conv1.stride, b.conv2.stride) for b in blocks]
    return stages, strides


def reference_choices(model):
    """Anchor centres, where P6 comes from and the ReLUs before P6 / P7 (Detectron2's
    LastLevelP6P7, AP-loss's P6 from C5, has the ReLU before P7 only)."""
    top = model.backbone.top_block
    relus = getattr(top, "relu_before_p6", False), getattr(top, "relu_before_p7", True)
    return (model.anchor_generator.offset, top.in_feature, *relus)


@pytest.mark.parametrize("stem", RECIPES)
def test_twins_build_the_recipe_backbone(stem):
    recipe = RECIPES[stem]
    yaml_model = build_model(yaml_cfg(stem))
    lazy_model = instantiate(lazy_cfg(stem).model)
    (yaml_stages, yaml_strides), (lazy_stages, lazy_strides) = map(
        describe_resnet, (yaml_model, lazy_model)
    )
    modulated = recipe == X101_DCN
    expected = [(n, modulated if deform else None, g, w) for n, deform, g, w in BACKBONES[recipe]]
    assert yaml_stages == lazy_stages == expected
    assert yaml_strides == lazy_strides
    # ResNeXt (FAIR weights): stride on the 3x3 conv; MSRA R-101: on the 1x1 conv.
    first_of_res3 = yaml_strides[3]
    assert first_of_res3 == (((1, 1), (2, 2)) if recipe == X101_DCN else ((2, 2), (1, 1)))
    assert reference_choices(yaml_model) == reference_choices(lazy_model)
    if recipe == X101_DCN:  # as the R-50 configs of these methods (official ATSS fork)
        assert reference_choices(yaml_model) == (0.5, "p5", False, True)
        assert yaml_model.test_topk_by == lazy_model.test_topk_by == "pair"
    else:  # the released AP-loss code: P6 from C5
        assert reference_choices(yaml_model) == (0.5, "res5", False, True)


@pytest.mark.parametrize("stem", RECIPES)
def test_twins_train_with_the_recipe_input_schedule_and_weights(stem):
    recipe = RECIPES[stem]
    cfg, lazy = yaml_cfg(stem), lazy_cfg(stem)

    yaml_augs = build_train_mapper(cfg).augmentations.augs
    lazy_augs = instantiate(lazy.dataloader.train.mapper).augmentations.augs
    assert [type(a) for a in yaml_augs] == [type(a) for a in lazy_augs]
    if recipe == X101_DCN:  # every short side in 640..800, long side <= 1333
        for resize in (yaml_augs[0], lazy_augs[0]):
            assert tuple(resize.short_edge_length) == (640, 800)
            assert resize.is_range and resize.max_size == 1333
    else:
        assert cfg.INPUT.TRAIN_PIPELINE == "ssd" and cfg.INPUT.SSD.SIZE == 512

    steps, max_iter = SCHEDULES[recipe]
    assert (tuple(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER) == (steps, max_iter)
    scheduler = lazy.lr_multiplier.scheduler
    assert (tuple(scheduler.milestones), scheduler.num_updates) == (steps, max_iter)
    assert lazy.train.max_iter == max_iter
    assert lazy.lr_multiplier.warmup_method == cfg.SOLVER.WARMUP_METHOD
    assert lazy.lr_multiplier.warmup_length == pytest.approx(cfg.SOLVER.WARMUP_ITERS / max_iter)

    assert cfg.MODEL.WEIGHTS == lazy.train.init_checkpoint == WEIGHTS[recipe]


def test_x101_weights_are_the_official_imagenet_file():
    """Detectron2's catalog name resolves to the file the official configs load (the ATSS fork's
    FAIR/20171220/X-101-64x4d is ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl)."""
    name = WEIGHTS[X101_DCN][len("catalog://") :]
    assert ModelCatalog.get(name) == (
        "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl"
    )


@pytest.mark.parametrize("stem", RECIPES)
def test_model_zoo_has_the_recipes(stem):
    assert model_zoo.get_config(stem + ".yaml").MODEL.RESNETS.DEPTH == 101
    assert model_zoo.get_config(stem + ".py").train.init_checkpoint == WEIGHTS[RECIPES[stem]]
