"""Box overlap ops: compiled kernels with the references in reference.py as fallback."""
import torch
from torch import Tensor

from . import reference
from ._extension import has_ops, warn_fallback_once

# Index = the mode's integer in the C++ enum IouMode (csrc/box_iou/box_iou.h).
IOU_MODES = ("iou", "giou")


def _mode_index(mode: str) -> int:
    if mode not in IOU_MODES:
        raise ValueError(f"mode must be one of {IOU_MODES}, got {mode!r}")
    return IOU_MODES.index(mode)


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou") -> Tensor:
    """
    Overlap between every pair of boxes from two sets.

    Args:
        boxes1 (Tensor): (N, 4) boxes as (x1, y1, x2, y2).
        boxes2 (Tensor): (M, 4) boxes, same dtype and device.
        mode (str): "iou", or "giou" for generalized IoU (IoU minus the empty share of the
            smallest enclosing box).

    Returns:
        Tensor: (N, M). Inverted boxes count as zero-area; pairs with an empty union get 0.
        Half and bfloat16 inputs are computed in float32 and returned in float32. Not
        differentiable: it is meant for label assignment.
    """
    mode_index = _mode_index(mode)
    if boxes1.dtype in (torch.float16, torch.bfloat16):
        boxes1, boxes2 = boxes1.float(), boxes2.float()
    if not has_ops():
        warn_fallback_once("pairwise_iou")
        return reference.pairwise_iou(boxes1, boxes2, mode)
    return torch.ops.d2ext.pairwise_iou(boxes1, boxes2, mode_index)
