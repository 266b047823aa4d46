"""The SSD-style training pipeline of the AP-loss code (METHODS.md Errata 8): each transform's
effect on an image and its boxes against hand-computed values, the box-aware mapper, the
INPUT.TRAIN_PIPELINE switch, and yaml / lazy agreement."""

import os
import random

import cv2
import detectron2.data.transforms as T
import numpy as np
import pytest
import torch
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode
from fvcore.transforms.transform import CropTransform, NoOpTransform

from d2ext.config import get_cfg
from d2ext.data import (
    BoxAwareDatasetMapper,
    PhotometricDistortion,
    SSDMinIoURandomCrop,
    ZoomOut,
    build_ssd_augmentations,
    build_train_mapper,
    photometric_transform,
)

PAPER = os.path.join(CONFIGS, "APLoss", "aploss_retinanet_R_50_FPN_100e_512")


def test_zoom_out_keeps_the_whole_image_on_a_mean_filled_canvas():
    image = np.random.RandomState(0).randint(10, 255, (30, 40, 3)).astype(np.float32)
    mean = (103.53, 116.28, 123.675)
    np.random.seed(0)
    for _ in range(20):
        tfm = ZoomOut((2.0, 3.0), fill=mean).get_transform(image)
        out = tfm.apply_image(image)
        h, w = out.shape[:2]
        assert 60 <= h <= 90 and 80 <= w <= 120
        x0, y0 = tfm.x0, tfm.y0
        np.testing.assert_array_equal(out[y0 : y0 + 30, x0 : x0 + 40], image)
        canvas = np.ones((h, w), bool)
        canvas[y0 : y0 + 30, x0 : x0 + 40] = False
        for c in range(3):  # every canvas pixel is the per-channel mean
            np.testing.assert_array_equal(out[..., c][canvas], np.float32(mean[c]))
        box = tfm.apply_box(np.array([[1.0, 2.0, 11.0, 12.0]]))
        np.testing.assert_allclose(box, [[x0 + 1, y0 + 2, x0 + 11, y0 + 12]])
    assert isinstance(ZoomOut((1.0, 1.0)).get_transform(image), NoOpTransform)
    with pytest.raises(ValueError, match="ratio_range"):
        ZoomOut((0.5, 2.0))


# --- Photometric distortion -------------------------------------------------------------------


def red_image():
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 2] = 200  # BGR red
    return image


def test_brightness_adds_a_constant_without_clipping():
    image = np.array([[[0, 100, 250]]], np.uint8)
    out = photometric_transform(brightness=20.0).apply_image(image)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[20, 120, 270]]], atol=1e-3)  # 270: no clip at 255
    out = photometric_transform(brightness=-20.0).apply_image(image)
    np.testing.assert_allclose(out, [[[-20, 80, 230]]], atol=1e-3)


def test_contrast_scales_the_pixels():
    image = np.array([[[10, 100, 200]]], np.uint8)
    out = photometric_transform(contrast=1.5).apply_image(image)
    np.testing.assert_allclose(out, [[[15, 150, 300]]], atol=1e-3)


def test_hue_rotates_in_degrees_and_saturation_scales():
    # Red (H = 0, S = 1, V = 200): +18 degrees gives G = V * 18 / 60; +120 gives green.
    np.testing.assert_allclose(
        photometric_transform(hue=18.0).apply_image(red_image())[0, 0], [0, 60, 200], atol=1e-2
    )
    np.testing.assert_allclose(
        photometric_transform(hue=120.0).apply_image(red_image())[0, 0], [0, 200, 0], atol=1e-2
    )
    # -18 degrees wraps to 342: B = V * 18 / 60.
    np.testing.assert_allclose(
        photometric_transform(hue=-18.0).apply_image(red_image())[0, 0], [60, 0, 200], atol=1e-2
    )
    # Saturation x 0.5: min = V * (1 - 0.5).
    np.testing.assert_allclose(
        photometric_transform(saturation=0.5).apply_image(red_image())[0, 0],
        [100, 100, 200],
        atol=1e-2,
    )


def test_contrast_before_or_after_the_hsv_step():
    image = np.array([[[0, 0, 200]]], np.uint8)
    # Saturation 1.5 on red gives min = 200 * (1 - 1.5) = -100 (unclipped); x 2 before or after:
    first = photometric_transform(contrast=2.0, contrast_first=True, saturation=1.5).apply_image(
        image
    )
    last = photometric_transform(contrast=2.0, contrast_first=False, saturation=1.5).apply_image(
        image
    )
    np.testing.assert_allclose(first[0, 0], [-200, -200, 400], atol=1e-2)
    np.testing.assert_allclose(last[0, 0], [-200, -200, 400], atol=1e-2)
    # Steps in the reference's order: float, brightness, HSV, contrast (last), lighting.
    kinds = [
        type(t).__name__
        for t in photometric_transform(5.0, 2.0, False, 1.5, 3.0, (0.1, 0, 0)).transforms
    ]
    assert kinds == [
        "FloatTransform",
        "BlendTransform",
        "HSVTransform",
        "BlendTransform",
        "BlendTransform",
    ]


def test_lighting_noise_is_the_imagenet_pca_shift():
    # The reference's constants (lib/dataloader/augmentations.py): eigenvalues for 0-255 pixels.
    eigval = np.array([55.46, 4.794, 1.148])
    eigvec = np.array(
        [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
    )
    alpha = np.array([0.1, -0.2, 0.3])
    expected = (eigvec * alpha) @ eigval  # first component: -3.1474 - 0.6896 + 0.1381 = -3.699
    assert expected[0] == pytest.approx(-3.699, abs=1e-3)
    image = np.full((2, 2, 3), 100, np.uint8)
    out = photometric_transform(lighting_alpha=alpha).apply_image(image)
    np.testing.assert_allclose(out, np.broadcast_to(100 + expected, (2, 2, 3)), atol=2e-3)


def test_photometric_distortion_draws():
    np.random.seed(0)
    image = np.full((4, 4, 3), 128, np.uint8)
    aug = PhotometricDistortion()
    seen = {"brightness": 0, "contrast": 0, "lighting": 0, "hue": 0, "contrast_first": 0}
    trials = 400
    for _ in range(trials):
        tfms = aug.get_transform(image).transforms
        blends = [t for t in tfms if type(t).__name__ == "BlendTransform"]
        (hsv,) = [t for t in tfms if type(t).__name__ == "HSVTransform"]
        assert 0.5 <= hsv.saturation <= 1.5 and -18 <= hsv.hue <= 18
        seen["hue"] += hsv.hue != 0
        for t in blends:
            if np.ndim(t.src_image) == 1:
                seen["lighting"] += 1
            elif t.src_weight == 1.0 and t.dst_weight == 1.0:
                assert -32 <= t.src_image <= 32
                seen["brightness"] += 1
            else:
                assert 0.5 <= t.dst_weight <= 1.5
                seen["contrast"] += 1
                seen["contrast_first"] += tfms.index(t) < tfms.index(hsv)
    for key in ("brightness", "contrast", "lighting", "hue"):
        assert 0.4 * trials < seen[key] < 0.6 * trials, key
    assert 0.3 * seen["contrast"] < seen["contrast_first"] < 0.7 * seen["contrast"]


# --- Min-IoU random crop ------------------------------------------------------------------------

# Box a (0, 0, 40, 40) lies in the patch (0, 0, 50, 50): IoU 0.64; box b (60, 60, 100, 100) is
# outside it: IoU 0.
BOXES = np.array([[0, 0, 40, 40], [60, 60, 100, 100]], np.float32)


def test_crop_rule_asks_the_largest_iou_and_a_centre_inside():
    patch = np.array([0, 0, 50, 50])
    assert SSDMinIoURandomCrop.accepts(BOXES, patch, 0.3)  # only box a reaches 0.3
    assert not SSDMinIoURandomCrop.accepts(BOXES, patch, 0.7)  # no box reaches 0.7
    # Box c's IoU with (0, 0, 50, 30) is 0.6 >= 0.3 but its centre (25, 35) is outside.
    box_c = np.array([[0, 0, 50, 70]], np.float32)
    assert not SSDMinIoURandomCrop.accepts(box_c, np.array([0, 0, 50, 30]), 0.3)
    assert not SSDMinIoURandomCrop.accepts(box_c, np.array([0, 0, 50, 30]), -np.inf)
    assert SSDMinIoURandomCrop.accepts(box_c, np.array([0, 0, 50, 40]), -np.inf)


def fixed_draws(monkeypatch, mode_index, uniforms):
    """np.random draws of a crop: the mode's index, then (new_w, new_h, left, top)."""
    values = iter(uniforms)
    monkeypatch.setattr(np.random, "randint", lambda *a, **k: mode_index)
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: next(values))


def test_pipeline_crop_accepts_when_one_box_reaches_the_iou(monkeypatch):
    cfg = get_cfg()
    cfg.merge_from_file(PAPER + ".yaml")
    (crop,) = [a for a in build_ssd_augmentations(cfg) if "Crop" in type(a).__name__]
    assert crop.sample_mode[1:-1] == (0.1, 0.3, 0.7, 0.9)  # no 0.5
    crop.mode_trials = crop.crop_trials = 1
    image = np.zeros((100, 100, 3), np.float32)
    fixed_draws(monkeypatch, 2, [50.0, 50.0, 0.0, 0.0])  # mode 0.3, patch (0, 0, 50, 50)
    tfm = crop.get_transform(image, BOXES)
    assert isinstance(tfm, CropTransform) and (tfm.x0, tfm.y0, tfm.w, tfm.h) == (0, 0, 50, 50)
    # No box centre inside the patch (50, 0, 100, 50): no crop.
    fixed_draws(monkeypatch, 2, [50.0, 50.0, 50.0, 0.0])
    assert isinstance(crop.get_transform(image, BOXES), NoOpTransform)


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
        {
            "bbox": [10, 10, 20, 20],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 0,
        },  # centre (20, 20)
        {
            "bbox": [40, 40, 90, 90],
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": 1,
        },  # centre (65, 65)
        {
            "bbox": [20, 20, 70, 40],
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": 2,
        },  # centre (45, 30)
    ]
    return {"file_name": path, "height": 100, "width": 100, "image_id": 0, "annotations": annos}


def mapper(augmentations):
    return BoxAwareDatasetMapper(is_train=True, augmentations=augmentations, image_format="BGR")


def test_mapper_gives_the_augmentations_the_boxes(dataset_dict):
    spy = RecordBoxes()
    crowd = {"bbox": [0, 0, 99, 99], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 1}
    out = mapper([spy])(dict(dataset_dict, annotations=dataset_dict["annotations"] + [crowd]))
    # Not the crowd box: it must not steer the crop (the reference loads none).
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
    torch.testing.assert_close(
        inst.gt_boxes.tensor, torch.tensor([[10.0, 10, 30, 30], [20, 20, 50, 40]])
    )


def test_full_ssd_pipeline_on_an_image(dataset_dict):
    cfg = get_cfg()
    cfg.INPUT.SSD.SIZE = 64
    m = mapper(build_ssd_augmentations(cfg))
    random.seed(1)
    np.random.seed(1)
    for _ in range(10):
        out = m(dataset_dict)
        assert tuple(out["image"].shape) == (3, 64, 64) and out["image"].dtype == torch.float32
        boxes = out["instances"].gt_boxes.tensor
        assert len(boxes) >= 1 and (boxes >= 0).all() and (boxes <= 64).all()


def test_train_pipeline_switch():
    cfg = get_cfg()
    assert type(build_train_mapper(cfg)) is DatasetMapper
    cfg.INPUT.TRAIN_PIPELINE = "ssd"
    ssd = build_train_mapper(cfg)
    assert isinstance(ssd, BoxAwareDatasetMapper)
    kinds = [type(a).__name__ for a in ssd.augmentations.augs]
    assert kinds == [
        "PhotometricDistortion",
        "RandomApply",
        "SSDMinIoURandomCrop",
        "RandomFlip",
        "Resize",
    ]
    zoom_out = ssd.augmentations.augs[1]
    assert zoom_out.prob == 0.5 and zoom_out.aug.ratio_range == (1.0, 4.0)
    np.testing.assert_allclose(zoom_out.aug.fill, cfg.MODEL.PIXEL_MEAN)
    cfg.INPUT.TRAIN_PIPELINE = "mmdet"
    with pytest.raises(ValueError, match="INPUT.TRAIN_PIPELINE must be one of .* got 'mmdet'"):
        build_train_mapper(cfg)


def describe(augs):
    out = []
    for a in augs:
        inner = getattr(a, "aug", None)
        out.append(
            (type(a).__name__, type(inner).__name__ if inner else None, getattr(a, "prob", None))
        )
    return out


def test_paper_yaml_and_lazy_pipelines_agree():
    cfg = get_cfg()
    cfg.merge_from_file(PAPER + ".yaml")
    yaml_mapper = build_train_mapper(cfg)
    lazy_mapper = instantiate(LazyConfig.load(PAPER + ".py").dataloader.train.mapper)
    assert type(yaml_mapper) is type(lazy_mapper) is BoxAwareDatasetMapper
    assert describe(yaml_mapper.augmentations.augs) == describe(lazy_mapper.augmentations.augs)
    yaml_augs, lazy_augs = yaml_mapper.augmentations.augs, lazy_mapper.augmentations.augs
    assert yaml_augs[4].shape == lazy_augs[4].shape == (512, 512)
    for name in (
        "brightness_delta",
        "contrast_range",
        "saturation_range",
        "hue_delta",
        "lighting_std",
        "prob",
    ):
        assert getattr(yaml_augs[0], name) == getattr(lazy_augs[0], name), name
    np.testing.assert_allclose(yaml_augs[1].aug.fill, lazy_augs[1].aug.fill)
    assert yaml_augs[2].sample_mode == lazy_augs[2].sample_mode
