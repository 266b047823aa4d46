"""The SSD-style training pipeline of the AP-loss recipe: ZoomOut, the box-aware mapper, the
INPUT.TRAIN_PIPELINE switch, and yaml / lazy agreement."""
import os
import random

import cv2
import numpy as np
import pytest
import torch

import detectron2.data.transforms as T
from conftest import CONFIGS
from d2ext.config import get_cfg
from d2ext.data import BoxAwareDatasetMapper, ZoomOut, build_ssd_augmentations, build_train_mapper
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode
from fvcore.transforms.transform import NoOpTransform

PAPER = os.path.join(CONFIGS, "APLoss", "aploss_retinanet_R_50_FPN_100e_512")


def test_zoom_out_keeps_the_whole_image_on_a_larger_canvas():
    image = np.random.RandomState(0).randint(10, 255, (30, 40, 3)).astype(np.uint8)
    random.seed(0)
    for _ in range(20):
        tfm = ZoomOut((2.0, 3.0), fill=7).get_transform(image)
        out = tfm.apply_image(image)
        h, w = out.shape[:2]
        assert 60 <= h <= 90 and 80 <= w <= 120
        x0, y0 = tfm.x0, tfm.y0
        np.testing.assert_array_equal(out[y0 : y0 + 30, x0 : x0 + 40], image)
        assert (out == 7).sum() == out.size - image.size  # the rest is fill
        box = tfm.apply_box(np.array([[1.0, 2.0, 11.0, 12.0]]))
        np.testing.assert_allclose(box, [[x0 + 1, y0 + 2, x0 + 11, y0 + 12]])
    assert isinstance(ZoomOut((1.0, 1.0)).get_transform(image), NoOpTransform)
    with pytest.raises(ValueError, match="ratio_range"):
        ZoomOut((0.5, 2.0))


class RecordBoxes(T.Augmentation):
    """Records the boxes an augmentation receives; changes nothing."""

    def get_transform(self, image, boxes):
        self.seen = None if boxes is None else boxes.copy()
        return NoOpTransform()


@pytest.fixture
def dataset_dict(tmp_path):
    path = str(tmp_path / "image.png")
    cv2.imwrite(path, np.full((100, 100, 3), 128, np.uint8))
    annos = [
        {"bbox": [10, 10, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},  # centre (20, 20)
        {"bbox": [40, 40, 90, 90], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1},  # centre (65, 65)
        {"bbox": [20, 20, 70, 40], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 2},  # centre (45, 30)
    ]
    return {"file_name": path, "height": 100, "width": 100, "image_id": 0, "annotations": annos}


def mapper(augmentations):
    return BoxAwareDatasetMapper(is_train=True, augmentations=augmentations, image_format="BGR")


def test_mapper_gives_the_augmentations_the_boxes(dataset_dict):
    spy = RecordBoxes()
    out = mapper([spy])(dataset_dict)
    np.testing.assert_allclose(spy.seen, [[10, 10, 30, 30], [40, 40, 90, 90], [20, 20, 70, 40]])
    assert len(out["instances"]) == 3
    # Detectron2's own mapper gives them none: this is why MinIoURandomCrop needs ours.
    spy = RecordBoxes()
    DatasetMapper(is_train=True, augmentations=[spy], image_format="BGR")(dataset_dict)
    assert spy.seen is None


def test_mapper_drops_instances_whose_centre_leaves_the_crop(dataset_dict):
    out = mapper([T.CropTransform(0, 0, 50, 50)])(dataset_dict)
    inst = out["instances"]
    assert tuple(out["image"].shape) == (3, 50, 50)
    # The second box overlaps the crop (40..50) but its centre (65, 65) is outside: dropped.
    assert inst.gt_classes.tolist() == [0, 2]
    torch.testing.assert_close(inst.gt_boxes.tensor, torch.tensor([[10.0, 10, 30, 30], [20, 20, 50, 40]]))


def test_full_ssd_pipeline_on_an_image(dataset_dict):
    cfg = get_cfg()
    cfg.INPUT.SSD.SIZE = 64
    m = mapper(build_ssd_augmentations(cfg))
    random.seed(1)
    np.random.seed(1)
    for _ in range(10):
        out = m(dataset_dict)
        assert tuple(out["image"].shape) == (3, 64, 64)
        boxes = out["instances"].gt_boxes.tensor
        assert len(boxes) >= 1 and (boxes >= 0).all() and (boxes <= 64).all()


def test_train_pipeline_switch():
    cfg = get_cfg()
    assert type(build_train_mapper(cfg)) is DatasetMapper
    cfg.INPUT.TRAIN_PIPELINE = "ssd"
    ssd = build_train_mapper(cfg)
    assert isinstance(ssd, BoxAwareDatasetMapper)
    kinds = [type(a).__name__ for a in ssd.augmentations.augs]
    assert kinds == ["RandomApply"] * 4 + ["MinIoURandomCrop", "Resize", "RandomFlip"]
    cfg.INPUT.TRAIN_PIPELINE = "mmdet"
    with pytest.raises(ValueError, match="INPUT.TRAIN_PIPELINE must be one of .* got 'mmdet'"):
        build_train_mapper(cfg)


def describe(augs):
    out = []
    for a in augs:
        inner = getattr(a, "aug", None)
        out.append((type(a).__name__, type(inner).__name__ if inner else None, getattr(a, "prob", None)))
    return out


def test_paper_yaml_and_lazy_pipelines_agree():
    cfg = get_cfg()
    cfg.merge_from_file(PAPER + ".yaml")
    yaml_mapper = build_train_mapper(cfg)
    lazy_mapper = instantiate(LazyConfig.load(PAPER + ".py").dataloader.train.mapper)
    assert type(yaml_mapper) is type(lazy_mapper) is BoxAwareDatasetMapper
    assert describe(yaml_mapper.augmentations.augs) == describe(lazy_mapper.augmentations.augs)
    assert yaml_mapper.augmentations.augs[5].shape == lazy_mapper.augmentations.augs[5].shape == (512, 512)
