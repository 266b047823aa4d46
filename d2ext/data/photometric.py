"""SSD's photometric distortion as the AP-loss code applies it (METHODS.md Errata 8): on a float
image, never clipped, each step with probability 1/2: additive brightness; then multiplicative
"contrast" either before or after the HSV steps (saturation factor, hue rotation in degrees);
then AlexNet's PCA lighting noise."""

from typing import Optional, Sequence, Tuple

import cv2
import detectron2.data.transforms as T
import numpy as np
from fvcore.transforms.transform import BlendTransform, Transform, TransformList


class FloatTransform(Transform):
    """Converts the image to float32, so that the following steps neither clip nor round (the
    reference distorts a float image and never clips)."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return img.astype(np.float32)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords


class HSVTransform(Transform):
    """
    BGR -> HSV (OpenCV float: hue in degrees [0, 360), saturation in [0, 1], value as the
    input), saturation x `saturation`, hue + `hue` degrees wrapped into [0, 360], back to BGR.
    Unclipped, as the reference (saturation may exceed 1). An RGB image has its hue rotated the
    other way: with a range symmetric about 0 the distribution is the same.
    """

    def __init__(self, saturation: float = 1.0, hue: float = 0.0):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_BGR2HSV)
        hsv[..., 1] *= self.saturation
        hsv[..., 0] += self.hue
        hsv[..., 0][hsv[..., 0] > 360.0] -= 360.0
        hsv[..., 0][hsv[..., 0] < 0.0] += 360.0
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords


def lighting_shift(alpha: Sequence[float]) -> np.ndarray:
    """
    AlexNet's PCA lighting noise for 0-255 images: sum_j alpha_j * eigval_j * eigvec_j, with
    Detectron2's ImageNet eigen-decomposition (``T.RandomLighting``; eigenvalues for 0-1 images,
    x 255 here: 55.46, 4.794, 1.148, the reference's). The components are in ImageNet's RGB
    order; the reference adds them to its BGR image unchanged, and so does d2ext (to the
    image's channels in their order).
    """
    pca = T.RandomLighting(0.0)
    return pca.eigen_vecs.dot(np.asarray(alpha) * pca.eigen_vals * 255.0).astype(np.float32)


def photometric_transform(
    brightness: Optional[float] = None,
    contrast: Optional[float] = None,
    contrast_first: bool = True,
    saturation: float = 1.0,
    hue: float = 0.0,
    lighting_alpha: Optional[Sequence[float]] = None,
) -> TransformList:
    """
    The distortion with the given draws (None: step skipped): + brightness, x contrast (before
    the HSV step if `contrast_first`, else after), HSV saturation / hue, + PCA lighting.
    """

    def add(value):
        return BlendTransform(src_image=value, src_weight=1.0, dst_weight=1.0)

    tfms = [FloatTransform()]
    if brightness is not None:
        tfms.append(add(np.float32(brightness)))
    # The reference's "contrast" scales the pixels, which is Detectron2's brightness blend.
    scale = [] if contrast is None else [BlendTransform(np.float32(0), 1.0 - contrast, contrast)]
    # The HSV round trip happens even when neither saturation nor hue is drawn, as the reference.
    hsv = [HSVTransform(saturation, hue)]
    tfms += scale + hsv if contrast_first else hsv + scale
    if lighting_alpha is not None:
        tfms.append(add(lighting_shift(lighting_alpha)))
    return TransformList(tfms)


class PhotometricDistortion(T.Augmentation):
    """
    The AP-loss code's photometric distortion (its ``PhotometricDistort``): brightness
    + U(-`brightness_delta`, `brightness_delta`); the HSV steps and a contrast factor
    U(`contrast_range`) in random order (contrast first or last, 1/2 each); saturation factor
    U(`saturation_range`); hue + U(-`hue_delta`, `hue_delta`) degrees; lighting noise with
    alpha ~ N(0, `lighting_std`^2) per component. Each of the five draws happens with
    probability `prob`. The image comes out float32 (BGR expected, see HSVTransform).
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: Tuple[float, float] = (0.5, 1.5),
        saturation_range: Tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
        lighting_std: float = 0.1,
        prob: float = 0.5,
    ):
        super().__init__()
        for name, (low, high) in (
            ("contrast_range", contrast_range),
            ("saturation_range", saturation_range),
        ):
            if not 0 <= low <= high:
                raise ValueError(
                    f"PhotometricDistortion {name} must satisfy 0 <= low <= high, got {(low, high)}"
                )
        if not 0 <= hue_delta <= 180:
            raise ValueError(
                f"PhotometricDistortion hue_delta must be in [0, 180] degrees, got {hue_delta}"
            )
        self._init(locals())

    def _maybe(self, draw):
        return draw() if np.random.rand() < self.prob else None

    def get_transform(self, image):
        uniform = np.random.uniform
        brightness = self._maybe(lambda: uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = bool(np.random.rand() < 0.5)
        contrast = self._maybe(lambda: uniform(*self.contrast_range))
        saturation = self._maybe(lambda: uniform(*self.saturation_range))
        hue = self._maybe(lambda: uniform(-self.hue_delta, self.hue_delta))
        alpha = self._maybe(lambda: np.random.normal(0.0, self.lighting_std, 3))
        return photometric_transform(
            brightness,
            contrast,
            contrast_first,
            1.0 if saturation is None else saturation,
            0.0 if hue is None else hue,
            alpha,
        )
