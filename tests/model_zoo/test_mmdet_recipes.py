"""Every configs/MMDet/ config trains and tests with its mmdetection config's recipe, read from
mmdetection 3.3's own config files (the test-only mmdet wheel, through mmengine's Config): the
train and test resize (scales, multi-scale range, cv2 backend), the schedule (epochs and LR steps
in iterations of one COCO epoch at batch 16), warmup, base LR and batch; the lazy twin resizes
the same way."""

import glob
import os

import pytest
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from mmdet_oracle import import_mmdet, mmdet_config
from test_mmdet_zoo import R50_1X, ZOO

from d2ext.config import get_cfg
from d2ext.data import CV2ResizeShortestEdge, build_test_mapper, build_train_mapper

# One COCO train2017 epoch at batch 16: ceil(117266 / 16) iterations.
ITERS_PER_EPOCH = 7329
SOURCES = {**R50_1X, **ZOO}  # d2ext config name -> mmdetection 3.3 config


def test_every_mmdet_config_but_gfocalv2_has_an_mmdetection_source():
    """GFocalV2's file comes from its authors' fork: no mmdetection 3.3 config to read."""
    names = {os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONFIGS, "MMDet", "*.yaml"))}
    assert names - set(SOURCES) == {"gfocal_r50_fpn_1x"} and len(SOURCES) == 20


def mmdet_recipe(name):
    import_mmdet()
    return mmdet_config(SOURCES[name])


def step(pipeline, *types):
    (found,) = [t for t in pipeline if t["type"] in types]
    return found


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_resize_schedule_and_lr_are_mmdetections(name):
    source = mmdet_recipe(name)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "MMDet", name + ".yaml"))
    assert cfg.INPUT.RESIZE_BACKEND == "cv2"
    # Train: one scale (Resize), or the short side drawn from a range (RandomResize).
    train = step(source.train_pipeline, "Resize", "RandomResize")
    if train["type"] == "Resize":
        long_side, short_side = train["scale"]
        assert cfg.INPUT.MIN_SIZE_TRAIN == (short_side,)
        assert cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice"
    else:
        (long_side, low), (long_side_2, high) = train["scale"]
        assert long_side == long_side_2
        assert cfg.INPUT.MIN_SIZE_TRAIN == (low, high)
        assert cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range"
    assert train["keep_ratio"] and cfg.INPUT.MAX_SIZE_TRAIN == long_side
    test = step(source.test_pipeline, "Resize")
    assert (cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST) == tuple(test["scale"])
    # Schedule: epochs and milestones, in iterations at batch 16.
    epochs = source.train_cfg["max_epochs"]
    warmup, multistep = source.param_scheduler
    assert cfg.SOLVER.IMS_PER_BATCH == source.auto_scale_lr["base_batch_size"] == 16
    assert cfg.SOLVER.MAX_ITER == epochs * ITERS_PER_EPOCH
    assert cfg.SOLVER.STEPS == tuple(m * ITERS_PER_EPOCH for m in multistep["milestones"])
    assert cfg.SOLVER.GAMMA == multistep["gamma"]
    assert warmup["type"] == "LinearLR" and not warmup["by_epoch"]
    assert (cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR) == (
        warmup["end"],
        warmup["start_factor"],
    )
    optimizer = source.optim_wrapper["optimizer"]
    assert cfg.SOLVER.BASE_LR == optimizer["lr"]
    assert cfg.SOLVER.MOMENTUM == optimizer["momentum"]
    assert cfg.SOLVER.WEIGHT_DECAY == optimizer["weight_decay"]


def describe(augmentations):
    return [
        (
            type(a),
            tuple(getattr(a, "short_edge_length", ())),
            getattr(a, "max_size", None),
            getattr(a, "is_range", None),
        )
        for a in augmentations
    ]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_lazy_twin_resizes_as_the_yaml_config(name):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "MMDet", name + ".yaml"))
    lazy = LazyConfig.load(os.path.join(CONFIGS, "MMDet", name + ".py"))
    for build, loader in (
        (build_train_mapper, lazy.dataloader.train),
        (build_test_mapper, lazy.dataloader.test),
    ):
        yaml_augs = describe(build(cfg).augmentations.augs)
        assert yaml_augs[0][0] is CV2ResizeShortestEdge
        assert yaml_augs == describe(instantiate(loader.mapper).augmentations.augs)
    assert lazy.train.max_iter == cfg.SOLVER.MAX_ITER
