"""
INPUT.RESIZE_BACKEND "cv2" (d2ext.data.CV2ResizeShortestEdge) against mmcv's own keep-ratio
resize, the oracle (``mmcv.imrescale`` / ``rescale_size``, cv2 backend; mmcv is a test-only
dependency): output size and pixels bit for bit on images of several sizes and both
orientations, segmentation maps, boxes; the "pil" default is Detectron2's augmentation,
unchanged; JPEG decoding of Detectron2 (PIL) and of mmdetection (cv2.imdecode) give the same
pixels on this environment's libraries. The whole mmdetection pipeline against d2ext's mappers
is in tests/model_zoo/test_mmdet_pipeline.py.
"""

import os

import cv2
import detectron2.data.transforms as T
import numpy as np
import pytest
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper, detection_utils
from PIL import Image

from d2ext.config import get_cfg
from d2ext.data import (
    CV2ResizeShortestEdge,
    CV2ResizeTransform,
    build_augmentation,
    build_test_mapper,
    build_train_mapper,
)

mmcv_image = pytest.importorskip(
    "mmcv.image", reason="mmcv is a test-only dependency (requirements-test.txt)"
)

# (h, w): odd and even sides, portrait and landscape, bounded by the short side (800) or by the
# long side (1333), down- and upsampled.
SIZES = [
    (480, 640),
    (640, 480),
    (333, 517),
    (517, 333),
    (427, 640),
    (612, 612),
    (1001, 1999),
    (1999, 1001),
    (799, 1333),
    (1333, 801),
    (37, 53),
    (3000, 200),
    (319, 638),
    (558, 333),
]
# Sizes whose 1333x800 output Detectron2's ResizeShortestEdge rounds differently from mmcv (one
# pixel on the short side, where the long side is bounded: 1,750 of the 25M sizes up to
# 5000 x 5000, 84 of them with sides in [100, 640] as COCO's; MODEL_ZOO.md).
D2_ROUNDS_DIFFERENTLY = [
    (319, 638),
    (638, 319),
    (317, 634),
    (310, 185),
    (333, 558),
    (11, 22),
    (29, 2494),
    (37, 2294),
    (111, 2666),
]
MMCV_SCALE = (1333, 800)  # mmdetection's Resize(scale=(1333, 800), keep_ratio=True)


def photo(h, w, channels=3, seed=0):
    """A uint8 image with smooth gradients, edges and noise (all of which resizing filters see)."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [128 + 90 * np.sin(x / (7 + 5 * c)) * np.cos(y / (11 - 3 * c)) for c in range(channels)], -1
    )
    img += rs.normal(0, 25, img.shape)
    img[h // 4 : h // 2, w // 3 : (2 * w) // 3] = rs.randint(0, 256, channels)
    return np.clip(img, 0, 255).astype(np.uint8)


def mmcv_output_shape(h, w):
    new_w, new_h = mmcv_image.rescale_size((w, h), MMCV_SCALE)
    return new_h, new_w


def test_output_size_is_mmcv_rescale_size():
    rs = np.random.RandomState(0)
    sizes = (
        SIZES
        + D2_ROUNDS_DIFFERENTLY
        + [(int(h), int(w)) for h, w in rs.randint(1, 4000, (5000, 2))]
    )
    for h, w in sizes:
        assert CV2ResizeShortestEdge.get_output_shape(h, w, 800, 1333) == mmcv_output_shape(h, w), (
            h,
            w,
        )
    for h, w in D2_ROUNDS_DIFFERENTLY:  # the sizes where the rule matters
        assert T.ResizeShortestEdge.get_output_shape(h, w, 800, 1333) != mmcv_output_shape(h, w), (
            h,
            w,
        )
    # A short edge bound above the long one: mmcv bounds the long side by the larger value.
    new_w, new_h = mmcv_image.rescale_size((640, 480), (500, 900))
    assert CV2ResizeShortestEdge.get_output_shape(480, 640, 900, 500) == (new_h, new_w)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_pixels_are_mmcv_imrescale(size):
    image = photo(*size)
    tfm = CV2ResizeShortestEdge(800, 1333).get_transform(image)
    assert isinstance(tfm, CV2ResizeTransform)
    out = tfm.apply_image(image)
    expected = mmcv_image.imrescale(image, MMCV_SCALE, interpolation="bilinear", backend="cv2")
    assert out.dtype == np.uint8 and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    # Segmentation maps: mmdetection's Resize rescales them with "nearest".
    seg = np.random.RandomState(1).randint(0, 80, size).astype(np.uint8)
    np.testing.assert_array_equal(
        tfm.apply_segmentation(seg),
        mmcv_image.imrescale(seg, MMCV_SCALE, interpolation="nearest", backend="cv2"),
    )


def test_pixels_differ_from_detectron2_pil_resize():
    """What the option changes: PIL's bilinear filter gives other pixels at the same size."""
    image = photo(427, 640)
    cv2_out = CV2ResizeShortestEdge(800, 1333).get_transform(image).apply_image(image)
    pil_out = T.ResizeShortestEdge(800, 1333).get_transform(image).apply_image(image)
    assert pil_out.shape == cv2_out.shape
    assert (pil_out != cv2_out).any()


def test_single_channel_float_and_inverse():
    image = photo(61, 90, channels=1)
    tfm = CV2ResizeTransform(61, 90, 122, 181)
    out = tfm.apply_image(image)
    assert out.shape == (122, 181, 1)
    np.testing.assert_array_equal(
        out[:, :, 0], cv2.resize(image[:, :, 0], (181, 122), interpolation=cv2.INTER_LINEAR)
    )
    as_float = image.astype(np.float32)
    np.testing.assert_array_equal(
        tfm.apply_image(as_float)[:, :, 0], cv2.resize(as_float, (181, 122))
    )
    boxes = np.array([[10.0, 5.0, 50.5, 60.0]])
    np.testing.assert_allclose(
        tfm.apply_box(boxes.copy()), boxes * [181 / 90, 122 / 61, 181 / 90, 122 / 61]
    )
    inverse = tfm.inverse()
    assert isinstance(inverse, CV2ResizeTransform) and inverse.apply_image(out).shape == image.shape
    np.testing.assert_allclose(inverse.apply_box(tfm.apply_box(boxes.copy())), boxes)
    # DefaultPredictor hands over a channel-reversed view (negative strides).
    color = photo(61, 90)
    np.testing.assert_array_equal(
        tfm.apply_image(color[:, :, ::-1]),
        cv2.resize(np.ascontiguousarray(color[:, :, ::-1]), (181, 122)),
    )
    with pytest.raises(ValueError, match="61x90 got an image of shape"):
        tfm.apply_image(np.zeros((60, 90, 3), np.uint8))


def cfg_with(*opts):
    cfg = get_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


def describe(augmentations):
    """Type and settings of each augmentation, for comparisons."""

    def sizes(a):  # a lazy config's lists are tuples in yaml configs
        return tuple(a.short_edge_length) if hasattr(a, "short_edge_length") else None

    return [
        (
            type(a),
            sizes(a),
            getattr(a, "max_size", None),
            getattr(a, "is_range", None),
            getattr(a, "prob", None),
        )
        for a in augmentations
    ]


@pytest.mark.parametrize("is_train", [True, False])
@pytest.mark.parametrize("crop", [False, True])
def test_pil_default_is_detectron2_augmentation(is_train, crop):
    cfg = cfg_with("INPUT.CROP.ENABLED", crop)
    assert cfg.INPUT.RESIZE_BACKEND == "pil"
    assert describe(build_augmentation(cfg, is_train)) == describe(
        detection_utils.build_augmentation(cfg, is_train)
    )
    expected = describe(DatasetMapper(cfg, is_train).augmentations.augs)  # Detectron2's own mapper
    mapper = (build_train_mapper if is_train else build_test_mapper)(cfg)
    assert describe(mapper.augmentations.augs) == expected
    assert T.ResizeShortestEdge in [a[0] for a in expected]


@pytest.mark.parametrize("crop", [False, True])
def test_cv2_backend_keeps_sizes_sampling_and_the_other_augmentations(crop):
    opts = (
        "INPUT.MIN_SIZE_TRAIN",
        (640, 800),
        "INPUT.MIN_SIZE_TRAIN_SAMPLING",
        "range",
        "INPUT.CROP.ENABLED",
        crop,
    )
    pil = describe(DatasetMapper(cfg_with(*opts), True).augmentations.augs)
    cv = describe(
        build_train_mapper(cfg_with("INPUT.RESIZE_BACKEND", "cv2", *opts)).augmentations.augs
    )
    resize = [i for i, a in enumerate(pil) if a[0] is T.ResizeShortestEdge]
    assert resize == [1 if crop else 0]
    assert cv[resize[0]][0] is CV2ResizeShortestEdge and cv[resize[0]][1:] == pil[resize[0]][1:]
    assert cv[: resize[0]] + cv[resize[0] + 1 :] == pil[: resize[0]] + pil[resize[0] + 1 :]


def test_bad_backend_is_named():
    with pytest.raises(ValueError, match="INPUT.RESIZE_BACKEND must be one of .*'opencv'"):
        build_train_mapper(cfg_with("INPUT.RESIZE_BACKEND", "opencv"))
    with pytest.raises(ValueError, match="'cv2' applies to INPUT.TRAIN_PIPELINE 'detectron2'"):
        build_train_mapper(cfg_with("INPUT.RESIZE_BACKEND", "cv2", "INPUT.TRAIN_PIPELINE", "ssd"))


MMDET_CONFIGS = [
    "atss_r50_fpn_1x_coco",
    "gfl_r50_fpn_1x_coco",
    "vfnet_r50_fpn_1x_coco",
    "libra-faster-rcnn_r50_fpn_1x_coco",
    "gfocal_r50_fpn_1x",
]


@pytest.mark.parametrize("name", MMDET_CONFIGS)
def test_mmdet_configs_resize_as_mmcv(name):
    """The configs/MMDet/ yaml configs and their lazy twins resize with the cv2 backend, 1333x800."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "MMDet", name + ".yaml"))
    assert cfg.INPUT.RESIZE_BACKEND == "cv2"
    lazy = LazyConfig.load(os.path.join(CONFIGS, "MMDet", name + ".py"))
    for is_train, build in ((True, build_train_mapper), (False, build_test_mapper)):
        yaml_augs = describe(build(cfg).augmentations.augs)
        loader = lazy.dataloader.train if is_train else lazy.dataloader.test
        lazy_augs = describe(instantiate(loader.mapper).augmentations.augs)
        assert yaml_augs[0][0] is CV2ResizeShortestEdge
        assert yaml_augs[0][1:3] == (((800,), 1333) if is_train else ((800, 800), 1333))
        assert yaml_augs == lazy_augs, is_train


# --- JPEG decoding: Detectron2's read_image (PIL) vs mmdetection's LoadImageFromFile (cv2) ------


def jpeg_variants(tmp_path):
    """JPEG files as cameras and COCO have them: PIL- and OpenCV-encoded, 4:2:0 / 4:2:2 / 4:4:4
    chroma, progressive, grayscale, and one with an EXIF rotation (both readers apply it)."""
    image = photo(333, 517)
    paths = []
    for quality in (75, 95):
        for subsampling in (0, 1, 2):
            paths.append(tmp_path / f"pil_q{quality}_s{subsampling}.jpg")
            Image.fromarray(image).save(paths[-1], quality=quality, subsampling=subsampling)
        paths.append(tmp_path / f"pil_q{quality}_progressive.jpg")
        Image.fromarray(image).save(paths[-1], quality=quality, progressive=True)
        paths.append(tmp_path / f"cv2_q{quality}.jpg")
        cv2.imwrite(str(paths[-1]), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    paths.append(tmp_path / "gray.jpg")
    Image.fromarray(image[:, :, 0]).save(paths[-1], quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    paths.append(tmp_path / "exif_rotated.jpg")
    Image.fromarray(image).save(paths[-1], quality=90, exif=exif)
    return paths


def test_jpeg_decoding_is_the_same_as_mmcv(tmp_path):
    """d2ext keeps Detectron2's (PIL) decoding in both backends because it gives mmcv's pixels;
    this fails if the PIL and OpenCV builds ever decode differently."""
    for path in jpeg_variants(tmp_path):
        ours = detection_utils.read_image(str(path), format="RGB")
        with open(path, "rb") as f:
            theirs = mmcv_image.imfrombytes(f.read(), flag="color", backend="cv2")[:, :, ::-1]
        assert ours.shape == theirs.shape, path.name
        np.testing.assert_array_equal(ours, theirs, err_msg=path.name)
    assert ours.shape[:2] == (517, 333)  # the EXIF rotation was applied
