"""Label assignment ops: compiled kernels with the dense references in reference.py as fallback."""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import reference
from ._extension import has_ops, warn_fallback_once
from .fused_losses import _float as _float32_if_half


def atss_assign(
    anchors: Tensor,
    num_anchors_per_level: List[int],
    gt_boxes: Tensor,
    topk: int,
    pred_boxes: Optional[Tensor] = None,
    anchor_weight: float = 1.0,
    pred_weight: float = 1.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """
    ATSS assignment of one image (METHODS.md §1.1), or DynamicATSS's combined-IoU variant (§2.1)
    when ``pred_boxes`` is given, without materialising any anchors x GT matrix: extra memory is
    O(R + M * levels * topk).

    1. Candidates: per level and GT, the min(topk, n_l) anchors whose centres are nearest the GT's
       (squared distance; ties go to the lower anchor index).
    2. Score of a candidate: anchor_weight * IoU(anchor, gt) [+ pred_weight * IoU(pred_box, gt)].
    3. Threshold per GT: anchor_weight * (mean + std of the candidates' anchor IoUs)
       [+ pred_weight * (mean + std of their predicted boxes' IoUs)], stds unbiased (the released
       DynamicATSS rule sums the two stds).
    4. Positive: score >= threshold and anchor centre inside the GT by more than 0.01 px.
    5. An anchor positive for several GTs takes the highest score (ties: lower GT index).

    Args:
        anchors: (R, 4), all levels concatenated level by level.
        num_anchors_per_level: n_l per level, summing to R.
        gt_boxes: (M, 4); M may be 0.
        topk: candidates per level and GT (k x anchors per location).
        pred_boxes: (R, 4) decoded predictions (detached), or None for plain ATSS.
        Half and bfloat16 inputs are assigned in float32 (scores returned in float32).

    Returns:
        matched_idxs: (R,) int64, the matched GT or -1 (background).
        matched_scores: (R,) the matched score (IoU for plain ATSS), 0 for background.
        thresholds: (M,) each GT's threshold (step 3); NaN for a GT with fewer than 2 candidates.
    """
    num_anchors_per_level = [int(n) for n in num_anchors_per_level]
    if sum(num_anchors_per_level) != anchors.shape[0]:
        raise ValueError(
            f"num_anchors_per_level {num_anchors_per_level} does not sum to the {anchors.shape[0]} anchors given"
        )
    anchors, gt_boxes, pred_boxes = (_float32_if_half(t) for t in (anchors, gt_boxes, pred_boxes))
    if not has_ops():
        warn_fallback_once("atss_assign")
        return reference.atss_assign(
            anchors, num_anchors_per_level, gt_boxes, topk, pred_boxes, anchor_weight, pred_weight
        )
    return torch.ops.d2ext.atss_assign(
        anchors, num_anchors_per_level, gt_boxes, topk, pred_boxes, anchor_weight, pred_weight
    )
