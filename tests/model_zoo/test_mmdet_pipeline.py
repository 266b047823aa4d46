"""
The configs/MMDet/ data mappers (INPUT.RESIZE_BACKEND "cv2") give mmdetection 3.3's own input:
its shipped COCO pipelines (LoadImageFromFile, LoadAnnotations, Resize(scale=(1333, 800),
keep_ratio=True), RandomFlip, PackDetInputs) run on the same JPEG files and annotations as
d2ext's train and test mappers: the same image size and pixels (mmdetection packs BGR, its data
preprocessor flips to RGB; d2ext reads RGB), the same labels and boxes (up to float32 rounding:
mmdetection scales boxes in float32, Detectron2 in float64 then rounds). Detectron2's "pil" resize is shown
to give other pixels on the same files, so the comparison can fail.
"""

import copy
import os

import numpy as np
import pytest
import torch
from conftest import CONFIGS
from detectron2.structures import BoxMode
from mmdet_oracle import import_mmdet, mmdet_config
from PIL import Image

# (h, w): landscape and portrait, odd sides, bounded by 800 or by 1333, up- and downsampled;
# 319 x 638 is one of the sizes Detectron2's ResizeShortestEdge rounds to 666 x 1333, mmcv to 667.
IMAGE_SIZES = [(427, 640), (640, 427), (333, 517), (1001, 1999), (299, 1201), (319, 638)]
# Boxes: mmdetection scales (and flips) float32 boxes, Detectron2 float64 ones rounded to
# float32 after: apart by float32 rounding, at most 2 ulps of coordinates below 2048 px
# (measured: 1.2e-4 px, 5.3e-5 px after the flip).
BOX_ATOL = 2.5e-4


def photo(h, w, seed):
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [128 + 90 * np.sin(x / (9 + 4 * c)) * np.cos(y / (13 - 3 * c)) for c in range(3)], -1
    )
    img += rs.normal(0, 25, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Detectron2 dataset dicts of JPEG files with COCO-style (x, y, w, h) boxes."""
    folder = tmp_path_factory.mktemp("mmdet_pipeline")
    out = []
    for i, (h, w) in enumerate(IMAGE_SIZES):
        path = str(folder / f"{i}.jpg")
        Image.fromarray(photo(h, w, i)).save(path, quality=90)
        rs = np.random.RandomState(100 + i)
        annotations = []
        for _ in range(4):
            x, y = rs.uniform(0, w * 0.6), rs.uniform(0, h * 0.6)
            bw, bh = rs.uniform(5, w - x), rs.uniform(5, h - y)
            annotations.append(
                {
                    "bbox": [x, y, bw, bh],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": int(rs.randint(80)),
                    "iscrowd": 0,
                }
            )
        out.append(
            {"file_name": path, "image_id": i, "height": h, "width": w, "annotations": annotations}
        )
    return out


def mmdet_results(record):
    """The input of mmdetection's pipelines for one record (what CocoDataset.parse_data_info makes)."""
    instances = []
    for a in record["annotations"]:
        x, y, w, h = a["bbox"]
        instances.append(
            {"bbox": [x, y, x + w, y + h], "bbox_label": a["category_id"], "ignore_flag": 0}
        )
    return {
        "img_path": record["file_name"],
        "img_id": record["image_id"],
        "instances": instances,
        "height": record["height"],
        "width": record["width"],
    }


def mmdet_pipeline(kind, flip_prob=None):
    import_mmdet()
    from mmengine.dataset import Compose

    steps = copy.deepcopy(mmdet_config("atss/atss_r50_fpn_1x_coco.py")[f"{kind}_pipeline"])
    for step in steps:
        if step["type"] == "RandomFlip" and flip_prob is not None:
            step["prob"] = flip_prob
    return Compose(steps)


def d2ext_cfg(*opts):
    from d2ext.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "MMDet", "atss_r50_fpn_1x_coco.yaml"))
    cfg.merge_from_list(list(opts))
    return cfg


def assert_same_input(ours, theirs):
    """d2ext's (3, H, W) RGB uint8 image vs mmdetection's packed (3, H, W) BGR uint8 input."""
    expected = theirs["inputs"].flip(0)
    assert ours["image"].shape == expected.shape
    assert ours["image"].dtype == expected.dtype == torch.uint8
    assert torch.equal(ours["image"], expected)


def assert_same_gt(ours, theirs):
    gt = theirs["data_samples"].gt_instances
    instances = ours["instances"]
    assert instances.image_size == tuple(theirs["data_samples"].img_shape)
    assert torch.equal(instances.gt_classes, gt.labels)
    torch.testing.assert_close(instances.gt_boxes.tensor, gt.bboxes.tensor, rtol=0, atol=BOX_ATOL)


def test_test_mapper_gives_mmdetection_test_input(records):
    from d2ext.data import build_test_mapper

    pipeline = mmdet_pipeline("test")
    mapper = build_test_mapper(d2ext_cfg())
    pil_mapper = build_test_mapper(d2ext_cfg("INPUT.RESIZE_BACKEND", "pil"))
    pil_differs = 0
    for record in records:
        theirs = pipeline(mmdet_results(record))
        ours = mapper(copy.deepcopy(record))
        assert_same_input(ours, theirs)
        assert tuple(theirs["data_samples"].img_shape) == tuple(ours["image"].shape[1:])
        pil = pil_mapper(copy.deepcopy(record))
        pil_differs += int(
            pil["image"].shape != ours["image"].shape
            or not torch.equal(pil["image"], ours["image"])
        )
    assert pil_differs == len(records)


@pytest.mark.parametrize("flip", [False, True])
def test_train_mapper_gives_mmdetection_train_input(records, flip):
    import detectron2.data.transforms as T

    from d2ext.data import build_train_mapper

    pipeline = mmdet_pipeline("train", flip_prob=1.0 if flip else 0.0)
    mapper = build_train_mapper(d2ext_cfg())
    flips = [a for a in mapper.augmentations.augs if isinstance(a, T.RandomFlip)]
    assert len(flips) == 1 and flips[0].prob == 0.5  # mmdetection's RandomFlip(prob=0.5)
    flips[0].prob = 1.0 if flip else 0.0
    for record in records:
        theirs = pipeline(mmdet_results(record))
        ours = mapper(copy.deepcopy(record))
        assert_same_input(ours, theirs)
        assert_same_gt(ours, theirs)
