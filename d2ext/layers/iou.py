"""Box overlap ops: compiled kernels with the references in reference.py as fallback."""

from typing import Optional

import torch
from torch import Tensor

from . import reference
from ._extension import has_ops, warn_fallback_once
from .fused_losses import _float as _float32_if_half
from .fused_losses import _reduction_index

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
    boxes1, boxes2 = _float32_if_half(boxes1), _float32_if_half(boxes2)
    if not has_ops():
        warn_fallback_once("pairwise_iou")
        return reference.pairwise_iou(boxes1, boxes2, mode)
    return torch.ops.d2ext.pairwise_iou(boxes1, boxes2, mode_index)


def combined_iou(
    anchors: Tensor,
    pred_boxes: Tensor,
    gt_boxes: Tensor,
    anchor_weight: float = 1.0,
    pred_weight: float = 1.0,
) -> Tensor:
    """
    DynamicATSS's combined IoU (METHODS.md §2.1) of every anchor with every GT, in one pass:
    anchor_weight * IoU(anchor_r, gt_m) + pred_weight * IoU(pred_box_r, gt_m), (R, M). The
    released code uses 1 + 1; other (or time-varying) weights are the paper's ablations.

    Args:
        anchors, pred_boxes (Tensor): (R, 4) anchors and the boxes predicted from them.
        gt_boxes (Tensor): (M, 4).
    """
    anchors, pred_boxes, gt_boxes = (_float32_if_half(t) for t in (anchors, pred_boxes, gt_boxes))
    if not has_ops():
        warn_fallback_once("combined_iou")
        return reference.combined_iou(anchors, pred_boxes, gt_boxes, anchor_weight, pred_weight)
    return torch.ops.d2ext.combined_iou(anchors, pred_boxes, gt_boxes, anchor_weight, pred_weight)


def aligned_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou") -> Tensor:
    """
    Overlap of each pair (boxes1[i], boxes2[i]) of two (N, 4) box sets: (N,). Same conventions
    as :func:`pairwise_iou`; not differentiable (quality targets, matching).
    """
    mode_index = _mode_index(mode)
    boxes1, boxes2 = _float32_if_half(boxes1), _float32_if_half(boxes2)
    if not has_ops():
        warn_fallback_once("aligned_iou")
        return reference.aligned_iou(boxes1, boxes2, mode)
    return torch.ops.d2ext.aligned_iou(boxes1, boxes2, mode_index)


def giou_loss(
    pred: Tensor, target: Tensor, weight: Optional[Tensor] = None, reduction: str = "sum"
) -> Tensor:
    """
    Generalized IoU loss, weight_i * (1 - GIoU(pred_i, target_i)), with a fused forward and
    backward kernel. Differentiable in ``pred`` only (targets are constants).

    Args:
        pred, target (Tensor): (N, 4) boxes (x1, y1, x2, y2).
        weight (Tensor, optional): (N,) per-box weights.
        reduction (str): "none" (N,), "sum" or "mean".
    """
    pred, target, weight = (
        _float32_if_half(pred),
        _float32_if_half(target),
        _float32_if_half(weight),
    )
    r = _reduction_index(reduction)
    if not has_ops():
        warn_fallback_once("giou_loss")
        return reference.giou_loss(pred, target, weight, reduction)
    return torch.ops.d2ext.giou_loss(pred, target, weight, r)
