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


def resize_with_backend(cfg, augmentations: List) -> List:
    """
    `augmentations` with each Detectron2 ResizeShortestEdge replaced, for INPUT.RESIZE_BACKEND
    "cv2", by :class:`CV2ResizeShortestEdge` with the same sizes and sampling (mmcv's
    ``imrescale`` size rule and OpenCV's bilinear filter, as mmdetection's keep-ratio Resize).
    """
    if check_resize_backend(cfg.INPUT.RESIZE_BACKEND) == "pil":
        return list(augmentations)
    return [
        CV2ResizeShortestEdge(a.short_edge_length, a.max_size, "range" if a.is_range else "choice")
        if type(a) is T.ResizeShortestEdge
        else a
        for a in augmentations
    ]


def build_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """Detectron2's ``build_augmentation`` (ResizeShortestEdge from INPUT.MIN_SIZE_* /
    MAX_SIZE_*, then INPUT.RANDOM_FLIP when training) with INPUT.RESIZE_BACKEND's resize."""
    return resize_with_backend(cfg, detection_utils.build_augmentation(cfg, is_train))
