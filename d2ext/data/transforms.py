"""The SSD-style training augmentation of the AP-loss code (METHODS.md §6.5 and Errata 8), as
Detectron2 augmentations: photometric distortion (d2ext.data.photometric), expand (ZoomOut),
min-IoU random crop (SSDMinIoURandomCrop), horizontal flip, resize to a square; the mean is
subtracted by the model (MODEL.PIXEL_MEAN). Use it with :class:`d2ext.data.BoxAwareDatasetMapper`:
the crop needs the boxes, which Detectron2's DatasetMapper does not give its augmentations."""

from typing import List, Sequence, Tuple

import detectron2.data.transforms as T
import numpy as np
from detectron2.config import LazyCall as L
from detectron2.structures import Boxes, pairwise_iou
from fvcore.transforms.transform import CropTransform, NoOpTransform, PadTransform

from .photometric import PhotometricDistortion

# Detectron2's MSRA (Caffe) BGR mean, MODEL.PIXEL_MEAN of the AP-loss configs.
MSRA_PIXEL_MEAN = (103.530, 116.280, 123.675)


class CanvasTransform(PadTransform):
    """PadTransform whose fill may differ per channel (a pixel value, e.g. the mean)."""

    def apply_image(self, img):
        h, w = img.shape[:2]
        canvas = np.empty((h + self.y0 + self.y1, w + self.x0 + self.x1) + img.shape[2:], img.dtype)
        canvas[...] = self.pad_value
        canvas[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = img
        return canvas


class ZoomOut(T.Augmentation):
    """
    SSD's "expand": place the image at a uniformly random integer position on a canvas `ratio`
    times larger (ratio ~ U(ratio_range), sides int(side * ratio)), filled with `fill` (a
    scalar or one value per channel; the reference fills with the pixel mean, which the
    model's normalisation then maps to 0). The whole image stays on the canvas, unresampled.
    """

    def __init__(self, ratio_range: Tuple[float, float] = (1.0, 4.0), fill=MSRA_PIXEL_MEAN):
        super().__init__()
        if not 1.0 <= ratio_range[0] <= ratio_range[1]:
            raise ValueError(
                f"ZoomOut ratio_range must satisfy 1 <= low <= high, got {ratio_range}"
            )
        fill = np.asarray(fill, dtype=np.float32)
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        ratio = np.random.uniform(*self.ratio_range)
        canvas_w, canvas_h = int(w * ratio), int(h * ratio)
        if canvas_w == w and canvas_h == h:
            return NoOpTransform()
        left = int(np.random.uniform(0, canvas_w - w))
        top = int(np.random.uniform(0, canvas_h - h))
        return CanvasTransform(
            left,
            top,
            canvas_w - w - left,
            canvas_h - h - top,
            orig_w=w,
            orig_h=h,
            pad_value=self.fill,
        )


class SSDMinIoURandomCrop(T.MinIoURandomCrop):
    """
    The AP-loss code's min-IoU random crop. A mode is drawn among "no crop", each of `min_ious`
    and "any"; a patch of sides U(`min_crop_size`, 1) x the image's, aspect h / w in [0.5, 2],
    at a random position, is accepted when the **largest** IoU of a box with it reaches the
    mode's threshold and at least one box centre lies strictly inside it (the boxes whose
    centre is outside are then dropped by the mapper). Up to `crop_trials` patches per mode,
    `mode_trials` modes, then no crop. Detectron2's MinIoURandomCrop requires **every** box
    to reach the threshold and has a 0.5 mode; the reference (METHODS.md Errata 8) has not.
    """

    def __init__(
        self, min_ious=(0.1, 0.3, 0.7, 0.9), min_crop_size=0.3, mode_trials=1000, crop_trials=50
    ):
        if not all(0 <= x <= 1 for x in min_ious):
            raise ValueError(
                f"SSDMinIoURandomCrop min_ious must be in [0, 1], got {tuple(min_ious)}"
            )
        super().__init__(tuple(min_ious), min_crop_size, mode_trials, crop_trials)
        # None: no crop; -inf: any patch with a box centre inside.
        self.sample_mode = (None, *self.min_ious, -np.inf)

    @staticmethod
    def accepts(boxes: np.ndarray, patch: np.ndarray, min_iou: float) -> bool:
        """Whether `patch` (x0, y0, x1, y1) passes the reference's test for (M, 4) boxes."""
        if len(boxes) == 0:
            return False
        ious = pairwise_iou(Boxes(patch.reshape(1, 4)), Boxes(boxes.reshape(-1, 4))).reshape(-1)
        if ious.max().item() < min_iou:
            return False
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (centers > patch[:2]).all(1) & (centers < patch[2:]).all(1)
        return bool(inside.any())

    def get_transform(self, image, boxes):
        if boxes is None or len(boxes) == 0:
            return NoOpTransform()
        h, w = image.shape[:2]
        for _ in range(self.mode_trials):
            min_iou = self.sample_mode[np.random.randint(len(self.sample_mode))]
            if min_iou is None:
                return NoOpTransform()
            for _ in range(self.crop_trials):
                new_w = np.random.uniform(self.min_crop_size * w, w)
                new_h = np.random.uniform(self.min_crop_size * h, h)
                if not 0.5 <= new_h / new_w <= 2:
                    continue
                left = np.random.uniform(0, w - new_w)
                top = np.random.uniform(0, h - new_h)
                patch = np.array([int(left), int(top), int(left + new_w), int(top + new_h)])
                if patch[2] <= patch[0] or patch[3] <= patch[1]:
                    continue
                if self.accepts(boxes, patch, min_iou):
                    x0, y0, x1, y1 = patch.tolist()
                    return CropTransform(x0, y0, x1 - x0, y1 - y0, orig_w=w, orig_h=h)
        return NoOpTransform()


def ssd_augmentations(
    size: int = 512,
    brightness_delta: float = 32.0,
    contrast_range: Sequence[float] = (0.5, 1.5),
    saturation_range: Sequence[float] = (0.5, 1.5),
    hue_delta: float = 18.0,
    lighting_std: float = 0.1,
    zoom_out_prob: float = 0.5,
    zoom_out_ratio: Sequence[float] = (1.0, 4.0),
    pixel_fill: Sequence[float] = MSRA_PIXEL_MEAN,
    min_ious: Sequence[float] = (0.1, 0.3, 0.7, 0.9),
    min_crop_size: float = 0.3,
) -> List:
    """
    The AP-loss code's training augmentation in its order: photometric distortion, expand,
    min-IoU crop, mirror, resize to `size` x `size` (bilinear; the reference draws one of five
    OpenCV interpolations per image), as LazyCall objects (for lazy configs;
    :func:`build_ssd_augmentations` instantiates them for yaml). `pixel_fill` should be the
    model's pixel mean, subtracted after the pipeline.
    """
    # Checked here, when the data loader (or lazy config) is built, not in the first batch.
    from d2ext.modeling.input_checks import check_each, check_increasing, check_range

    check_range("INPUT.SSD.SIZE (size)", size, 1, integer=True)
    check_range("INPUT.SSD.BRIGHTNESS_DELTA (brightness_delta)", brightness_delta, 0, 255)
    check_increasing("INPUT.SSD.CONTRAST_RANGE (contrast_range)", contrast_range, 0, length=2)
    check_increasing("INPUT.SSD.SATURATION_RANGE (saturation_range)", saturation_range, 0, length=2)
    check_range("INPUT.SSD.HUE_DELTA (hue_delta, degrees)", hue_delta, 0, 180)
    check_range("INPUT.SSD.LIGHTING_STD (lighting_std)", lighting_std, 0)
    check_range("INPUT.SSD.ZOOM_OUT_PROB (zoom_out_prob)", zoom_out_prob, 0, 1)
    check_increasing("INPUT.SSD.ZOOM_OUT_RATIO (zoom_out_ratio)", zoom_out_ratio, 1, length=2)
    check_each("INPUT.SSD.MIN_IOUS (min_ious)", min_ious, low=0, high=1)
    check_range("INPUT.SSD.MIN_CROP_SIZE (min_crop_size)", min_crop_size, 0, 1, low_open=True)
    return [
        L(PhotometricDistortion)(
            brightness_delta=brightness_delta,
            contrast_range=tuple(contrast_range),
            saturation_range=tuple(saturation_range),
            hue_delta=hue_delta,
            lighting_std=lighting_std,
        ),
        L(T.RandomApply)(
            tfm_or_aug=L(ZoomOut)(ratio_range=tuple(zoom_out_ratio), fill=tuple(pixel_fill)),
            prob=zoom_out_prob,
        ),
        L(SSDMinIoURandomCrop)(min_ious=tuple(min_ious), min_crop_size=min_crop_size),
        L(T.RandomFlip)(horizontal=True),
        L(T.Resize)(shape=(size, size)),
    ]


def build_ssd_augmentations(cfg) -> List[T.Augmentation]:
    """:func:`ssd_augmentations` from the INPUT.SSD keys; expand fills with MODEL.PIXEL_MEAN."""
    from detectron2.config import instantiate

    _C = cfg.INPUT.SSD
    return [
        instantiate(aug)
        for aug in ssd_augmentations(
            size=_C.SIZE,
            brightness_delta=_C.BRIGHTNESS_DELTA,
            contrast_range=_C.CONTRAST_RANGE,
            saturation_range=_C.SATURATION_RANGE,
            hue_delta=_C.HUE_DELTA,
            lighting_std=_C.LIGHTING_STD,
            zoom_out_prob=_C.ZOOM_OUT_PROB,
            zoom_out_ratio=_C.ZOOM_OUT_RATIO,
            pixel_fill=cfg.MODEL.PIXEL_MEAN,
            min_ious=_C.MIN_IOUS,
            min_crop_size=_C.MIN_CROP_SIZE,
        )
    ]
