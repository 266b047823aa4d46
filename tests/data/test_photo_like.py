"""The bundled photo-like dataset (d2ext/data/photo_like.py, issue 31): registered like
d2ext_shapes, generated deterministically on first use, and what makes it photo-like: few large
objects, cut at the border, on textured backgrounds."""

import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.data import photo_like


@pytest.fixture(scope="module")
def minival(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    json_file = photo_like.prepare_split("d2ext_photos_minival", root)
    with open(json_file) as f:
        return root, json_file, json.load(f)


def test_registered_on_import():
    for name in ("d2ext_photos_train", "d2ext_photos_val", "d2ext_photos_minival"):
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["ball", "box", "star"]
        assert meta.evaluator_type == "coco"


def test_split_is_coco_and_versioned(minival):
    root, json_file, coco = minival
    assert coco["info"]["version"] == photo_like.VERSION
    assert [c["name"] for c in coco["categories"]] == photo_like.CLASSES
    assert len(coco["images"]) == photo_like.SPLITS["d2ext_photos_minival"][0]
    image_dir = photo_like.split_paths("d2ext_photos_minival", root)[1]
    for image in coco["images"]:
        array = cv2.imread(os.path.join(image_dir, image["file_name"]))
        assert array.shape[:2] == (image["height"], image["width"])
        assert 256 <= image["height"] <= 320 and 288 <= image["width"] <= 384


def test_few_large_objects_some_cut_at_the_border(minival):
    _, _, coco = minival
    sizes = {i["id"]: (i["width"], i["height"]) for i in coco["images"]}
    per_image = {i: 0 for i in sizes}
    relative, at_border = [], 0
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        width, height = sizes[a["image_id"]]
        per_image[a["image_id"]] += 1
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        assert min(w, h) >= photo_like.MIN_BOX_SIDE
        relative.append(max(w, h) / min(width, height))
        at_border += x == 0 or y == 0 or x + w == width or y + h == height
    assert all(1 <= n <= photo_like.MAX_OBJECTS for n in per_image.values())
    # Large: the median box's longer side is ~40 % of the image's shorter side (d2ext_shapes: 17 %).
    assert np.median(relative) > 0.3
    assert at_border >= 0.3 * len(coco["annotations"])  # ~65 % (d2ext_shapes: 1 %)
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 3}


def test_backgrounds_are_textured(minival):
    # Mean band-pass (difference of Gaussians, sigma 2 and 8 px) magnitude outside the boxes:
    # above the sensor noise, below the lighting gradient. d2ext_shapes' shaded backgrounds with
    # thin clutter: median 1.4 over its first 60 training images; here ~3.5.
    root, _, coco = minival
    image_dir = photo_like.split_paths("d2ext_photos_minival", root)[1]
    scores = []
    for image in coco["images"]:
        gray = cv2.imread(os.path.join(image_dir, image["file_name"]), cv2.IMREAD_GRAYSCALE)
        gray = gray.astype(np.float32)
        band = np.abs(cv2.GaussianBlur(gray, (0, 0), 2) - cv2.GaussianBlur(gray, (0, 0), 8))
        outside = np.ones(gray.shape, bool)
        for a in coco["annotations"]:
            if a["image_id"] == image["id"]:
                x, y, w, h = (int(v) for v in a["bbox"])
                outside[y : y + h, x : x + w] = False
        if outside.sum() > 1000:
            scores.append(band[outside].mean())
    assert np.median(scores) > 2.5


def test_generation_is_deterministic_and_reused(minival, tmp_path):
    root, json_file, coco = minival
    mtime = os.path.getmtime(json_file)
    assert photo_like.prepare_split("d2ext_photos_minival", root) == json_file
    assert os.path.getmtime(json_file) == mtime  # an up-to-date copy is not rewritten
    # The same seed renders the same first image and boxes elsewhere.
    rng_a, rng_b = np.random.default_rng(13), np.random.default_rng(13)
    image_a, objects_a, _ = photo_like.render_image(rng_a)
    image_b, objects_b, _ = photo_like.render_image(rng_b)
    assert objects_a == objects_b and np.array_equal(image_a, image_b)


def test_an_old_version_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setitem(photo_like.SPLITS, "d2ext_photos_minival", (2, 13))
    root = str(tmp_path)
    json_file = photo_like.prepare_split("d2ext_photos_minival", root)
    with open(json_file) as f:
        coco = json.load(f)
    coco["info"]["version"] = photo_like.VERSION - 1
    with open(json_file, "w") as f:
        json.dump(coco, f)
    photo_like.prepare_split("d2ext_photos_minival", root)
    with open(json_file) as f:
        assert json.load(f)["info"]["version"] == photo_like.VERSION
