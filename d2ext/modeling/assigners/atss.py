"""ATSS label assignment (METHODS.md §1.1), shared by ATSS, DynamicATSS, GFL, VFNet and MuSu.

Letters: R anchors (all levels concatenated), M ground-truth boxes, C candidates per GT.
"""
from typing import List, Tuple

import torch
from torch import Tensor

from d2ext.layers import pairwise_iou

# An anchor centre must lie this far (pixels) inside a GT box to be a positive for it.
CENTER_INSIDE_EPS = 0.01


@torch.no_grad()
def atss_assign(
    anchors: Tensor,
    num_anchors_per_level: List[int],
    gt_boxes: Tensor,
    topk: int = 9,
    num_anchors_per_location: int = 1,
) -> Tuple[Tensor, Tensor]:
    """
    Assigns every anchor of one image to a ground-truth box or to the background.

    1. Candidates: per level and GT, the k_l = min(topk * A, n_l) anchors whose centres are
       closest to the GT centre (squared Euclidean distance; ties go to the lower anchor index).
    2. Per GT, threshold = mean + unbiased std of the candidates' IoUs.
    3. A candidate is positive for the GT if its IoU >= threshold and its centre lies strictly
       (by CENTER_INSIDE_EPS) inside the GT box.
    4. An anchor positive for several GTs takes the one with the highest IoU (ties: lower GT
       index). Everything else is background.

    Args:
        anchors: (R, 4) anchor boxes of all levels, concatenated level by level.
        num_anchors_per_level: n_l for each level; sums to R.
        gt_boxes: (M, 4) ground-truth boxes; M may be 0.
        topk: k, candidates per level and GT for each anchor per location.
        num_anchors_per_location: A.

    Returns:
        matched_idxs: (R,) int64, index of the matched GT or -1 for background.
        matched_ious: (R,) IoU between each anchor and its matched GT (0 for background).
    """
    if sum(num_anchors_per_level) != anchors.shape[0]:
        raise ValueError(
            f"num_anchors_per_level {num_anchors_per_level} does not sum to the "
            f"{anchors.shape[0]} anchors given"
        )
    num_anchors = anchors.shape[0]
    matched_idxs = anchors.new_full((num_anchors,), -1, dtype=torch.int64)
    matched_ious = anchors.new_zeros((num_anchors,))
    if gt_boxes.shape[0] == 0:
        return matched_idxs, matched_ious

    ious = pairwise_iou(anchors, gt_boxes)  # (R, M)
    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2  # (R, 2)
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # (M, 2)
    sq_dists = (anchor_centers[:, None, :] - gt_centers[None, :, :]).pow(2).sum(-1)  # (R, M)

    candidate_idxs = _nearest_per_level(sq_dists, num_anchors_per_level, topk * num_anchors_per_location)
    candidate_ious = ious.gather(0, candidate_idxs)  # (C, M)
    # Unbiased std, as the reference implementations (torch's default); NaN for a single
    # candidate, which then selects nothing.
    thresholds = candidate_ious.mean(0) + candidate_ious.std(0)  # (M,)
    is_pos = candidate_ious >= thresholds[None, :]
    is_pos &= _centers_inside(anchor_centers[candidate_idxs], gt_boxes)

    # Resolve anchors claimed by several GTs: the highest IoU wins; -1 marks "not positive".
    pos_ious = torch.full_like(ious, -1.0)
    pos_ious.scatter_(0, candidate_idxs, torch.where(is_pos, candidate_ious, -1.0))
    best_ious, best_gt = pos_ious.max(dim=1)  # first maximal index on ties
    is_matched = best_ious >= 0
    matched_idxs[is_matched] = best_gt[is_matched]
    matched_ious[is_matched] = best_ious[is_matched]
    return matched_idxs, matched_ious


def _nearest_per_level(sq_dists: Tensor, num_anchors_per_level: List[int], k: int) -> Tensor:
    """(C, M) indices of the min(k, n_l) nearest anchors of every level, for every GT."""
    candidates = []
    start = 0
    for n in num_anchors_per_level:
        if n > 0:
            order = torch.sort(sq_dists[start : start + n], dim=0, stable=True).indices
            candidates.append(order[: min(k, n)] + start)
        start += n
    return torch.cat(candidates, dim=0)


def _centers_inside(centers: Tensor, gt_boxes: Tensor) -> Tensor:
    """(C, M) mask: centre (C, M, 2) strictly inside GT box m (M, 4) by CENTER_INSIDE_EPS."""
    ltrb = torch.cat([centers - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - centers], dim=-1)
    return ltrb.min(dim=-1).values > CENTER_INSIDE_EPS
