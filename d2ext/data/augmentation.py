"""Detectron2's resize + flip augmentation from the config, with INPUT.RESIZE_BACKEND choosing
whose resize runs (d2ext/config/data.py)."""
from typing import List

import detectron2.data.transforms as T
from detectron2.data import detection_utils

from .cv2_resize import CV2ResizeShortestEdge

RESIZE_BACKENDS = ("pil", "cv2")


def check_resize_backend(backend: str) -> str:
    if backend not in RESIZE_BACKENDS:
        raise ValueError(f"INPUT.RESIZE_BACKEND must be one of {RESIZE_BACKENDS}, got {backend!r}")
    return backend


def build_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """
    Detectron2's ``build_augmentation`` (ResizeShortestEdge from INPUT.MIN_SIZE_* /
    MAX_SIZE_*, then INPUT.RANDOM_FLIP when training). With INPUT.RESIZE_BACKEND "cv2" the
    resize is :class:`CV2ResizeShortestEdge` with the same sizes and sampling: mmcv's
    ``imrescale`` size rule and OpenCV's bilinear filter, as mmdetection's keep-ratio Resize.
    """
    augmentations = detection_utils.build_augmentation(cfg, is_train)
    if check_resize_backend(cfg.INPUT.RESIZE_BACKEND) == "cv2":
        resize = augmentations[0]
        assert type(resize) is T.ResizeShortestEdge, resize  # Detectron2's list starts with it
        augmentations[0] = CV2ResizeShortestEdge(
            resize.short_edge_length, resize.max_size, "range" if resize.is_range else "choice"
        )
    return augmentations
