"""
mmdetection's keep-ratio resize as a Detectron2 augmentation: ``Resize(scale=(max_size,
short_edge_length), keep_ratio=True)`` runs ``mmcv.imrescale`` with the cv2 backend, which
differs from Detectron2's ``ResizeShortestEdge`` in the filter (OpenCV's bilinear
``cv2.resize(..., INTER_LINEAR)`` instead of PIL's) and, for some image sizes, in the rounding
of the output size (MODEL_ZOO.md, "Known differences").
"""

import sys

import cv2
import detectron2.data.transforms as T
import numpy as np


class CV2ResizeTransform(T.ResizeTransform):
    """
    Detectron2's ResizeTransform through ``cv2.resize`` for every dtype (Detectron2's resizes
    uint8 images with PIL and other dtypes with ``F.interpolate``): `interp` is an OpenCV flag,
    ``cv2.INTER_LINEAR`` by default; segmentation maps use ``cv2.INTER_NEAREST``. Coordinates
    scale by new / old size, as in ResizeTransform.
    """

    def __init__(self, h, w, new_h, new_w, interp=cv2.INTER_LINEAR):
        super().__init__(h, w, new_h, new_w, interp)

    def apply_image(self, img, interp=None):
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"CV2ResizeTransform from {self.h}x{self.w} got an image of shape {img.shape}"
            )
        out = cv2.resize(
            np.ascontiguousarray(img),
            (self.new_w, self.new_h),
            interpolation=self.interp if interp is None else interp,
        )
        if img.ndim == 3 and out.ndim == 2:  # cv2 drops a single channel axis
            out = out[:, :, None]
        return out

    def apply_segmentation(self, segmentation):
        return self.apply_image(segmentation, interp=cv2.INTER_NEAREST)

    def inverse(self):
        return CV2ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)


class CV2ResizeShortestEdge(T.ResizeShortestEdge):
    """
    ResizeShortestEdge as mmcv's ``imrescale(img, (max_size, short_edge_length))`` does it
    (mmdetection's keep-ratio Resize, cv2 backend): the sampled short edge length and
    `max_size` form mmcv's scale, whose larger value bounds the long side and smaller value
    the short side; the factor is s = min(long bound / long side, short bound / short side)
    and each side becomes int(side * s + 0.5) (Detectron2 rounds the product of two ratios
    instead, which lands on the other side of .5 for some sizes). The image is resized by
    :class:`CV2ResizeTransform`. Sampling (`sample_style` "range" / "choice") is Detectron2's.
    """

    def __init__(
        self, short_edge_length, max_size=sys.maxsize, sample_style="range", interp=cv2.INTER_LINEAR
    ):
        super().__init__(short_edge_length, max_size, sample_style, interp)

    def get_transform(self, image):
        h, w = image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return T.NoOpTransform()
        newh, neww = self.get_output_shape(h, w, size, self.max_size)
        return CV2ResizeTransform(h, w, newh, neww, self.interp)

    @staticmethod
    def get_output_shape(oldh: int, oldw: int, short_edge_length: int, max_size: int):
        """(new h, new w) as ``mmcv.rescale_size((oldw, oldh), (max_size, short_edge_length))``."""
        long_bound, short_bound = max(max_size, short_edge_length), min(max_size, short_edge_length)
        scale = min(long_bound / max(oldh, oldw), short_bound / min(oldh, oldw))
        return int(oldh * float(scale) + 0.5), int(oldw * float(scale) + 0.5)
