"""The SSD-style training augmentation of the AP-loss recipe (METHODS.md §6.5), built from
Detectron2 augmentations: photometric distortion, zoom-out, min-IoU random crop, resize to a
square, horizontal flip. Use it with :class:`d2ext.data.BoxAwareDatasetMapper`: the crop needs the
boxes, which Detectron2's DatasetMapper does not give its augmentations."""
import random
from typing import List, Sequence, Tuple

from fvcore.transforms.transform import NoOpTransform, PadTransform

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L


class ZoomOut(T.Augmentation):
    """
    SSD's "expand": place the image at a uniformly random position on a canvas `ratio` times
    larger (ratio ~ U(ratio_range)), filled with `fill`. Unlike RandomExtent, the whole image
    always stays on the canvas and nothing is resampled.
    """

    def __init__(self, ratio_range: Tuple[float, float] = (1.0, 4.0), fill: float = 114.0):
        super().__init__()
        if not 1.0 <= ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ZoomOut ratio_range must satisfy 1 <= low <= high, got {ratio_range}")
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        ratio = random.uniform(*self.ratio_range)
        canvas_w, canvas_h = int(w * ratio), int(h * ratio)
        if canvas_w == w and canvas_h == h:
            return NoOpTransform()
        left = int(random.uniform(0, canvas_w - w))
        top = int(random.uniform(0, canvas_h - h))
        return PadTransform(
            left, top, canvas_w - w - left, canvas_h - h - top, orig_w=w, orig_h=h, pad_value=self.fill
        )


def ssd_augmentations(
    size: int = 512,
    zoom_out_prob: float = 0.5,
    zoom_out_ratio: Sequence[float] = (1.0, 4.0),
    pixel_fill: float = 114.0,
    min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    min_crop_size: float = 0.3,
) -> List:
    """
    The augmentations, as LazyCall objects (for lazy configs; :func:`build_ssd_augmentations`
    instantiates them for yaml). Photometric distortion follows SSD's ranges where Detectron2
    has the operation (brightness as a factor of 1 +- 32/255, contrast and saturation 0.5-1.5,
    each with probability 1/2); SSD's hue jitter has no Detectron2 counterpart and is left out.
    """
    def maybe(aug, prob=0.5):
        return L(T.RandomApply)(tfm_or_aug=aug, prob=prob)

    return [
        maybe(L(T.RandomBrightness)(intensity_min=1 - 32 / 255, intensity_max=1 + 32 / 255)),
        maybe(L(T.RandomContrast)(intensity_min=0.5, intensity_max=1.5)),
        maybe(L(T.RandomSaturation)(intensity_min=0.5, intensity_max=1.5)),
        maybe(L(ZoomOut)(ratio_range=tuple(zoom_out_ratio), fill=pixel_fill), zoom_out_prob),
        L(T.MinIoURandomCrop)(min_ious=tuple(min_ious), min_crop_size=min_crop_size),
        L(T.Resize)(shape=(size, size)),
        L(T.RandomFlip)(horizontal=True),
    ]


def build_ssd_augmentations(cfg) -> List[T.Augmentation]:
    """:func:`ssd_augmentations` from the INPUT.SSD keys."""
    from detectron2.config import instantiate

    _C = cfg.INPUT.SSD
    return [
        instantiate(aug)
        for aug in ssd_augmentations(
            size=_C.SIZE,
            zoom_out_prob=_C.ZOOM_OUT_PROB,
            zoom_out_ratio=_C.ZOOM_OUT_RATIO,
            pixel_fill=_C.PIXEL_FILL,
            min_ious=_C.MIN_IOUS,
            min_crop_size=_C.MIN_CROP_SIZE,
        )
    ]
