"""Checks of the model's input normalisation, when the model is built."""
import math


def check_pixel_std(pixel_std, key="MODEL.PIXEL_STD"):
    """A zero (or non-finite) entry turns every image into inf/NaN: the model would train on, or
    crash in an op (VFNet's deformable convolution), far from the cause."""
    values = [float(v) for v in pixel_std]
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"{key} must be finite values > 0 (images are divided by it), got {list(pixel_std)}")
