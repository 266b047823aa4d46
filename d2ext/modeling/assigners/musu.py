"""MuSu's candidate bags, mutual rankings and rank weights (METHODS.md §5.1b-5.2).

A RECONSTRUCTION from the paper's description (Gao, Wang, Wu, "Mutual Supervision for Dense
Object Detection", ICCV 2021): no code was released and the paper's equations could not be
retrieved. The gate, the mixing of the two scores and the rank -> weight map below are our
choices of the described mechanism; each of their knobs is a MODEL.MUSU key.

Letters: R anchors (all levels concatenated), M ground-truth boxes, C candidates per GT.
"""

from dataclasses import dataclass
from typing import List

import torch
from torch import Tensor

from d2ext.layers.reference import CENTER_INSIDE_EPS

RANK_WEIGHTS = ("linear", "exp")


@dataclass
class MutualBags:
    """The output of :func:`mutual_bags` for one image."""

    matched_idxs: Tensor  # (R,) GT whose bag holds the anchor, -1 outside every bag
    reg_weights: Tensor  # (R,) regression weight from the classification-led ranking
    cls_weights: Tensor  # (R,) classification weight from the IoU-led ranking
    bag_sizes: Tensor  # (M,) anchors in each GT's bag
    top_agree: Tensor  # (M,) bool: both rankings put the same anchor first (False if empty)


def rank_to_weight(rank: Tensor, kind: str, topk: int, tau: float) -> Tensor:
    """Loss weight of the anchor at 0-based `rank` in its bag: "linear" max(0, 1 - rank / topk)
    or "exp" exp(-rank / tau). The best-ranked anchor gets 1."""
    if kind == "linear":
        return (1.0 - rank.float() / topk).clamp(min=0.0)
    if kind == "exp":
        return torch.exp(-rank.float() / tau)
    raise ValueError(f"MODEL.MUSU.RANK_WEIGHT must be one of {RANK_WEIGHTS}, got {kind!r}")


def mixed_keys(cls_scores: Tensor, ious: Tensor, mix_lambda: float):
    """
    The two heads' ranking keys, a symmetric weighted geometric mix of the classification
    score s and the IoU u: regression is led by s, classification by u.

    Returns:
        reg_key = s^(1 - lambda) * u^lambda, cls_key = u^(1 - lambda) * s^lambda
        (lambda = 0: the "direct" mutual form, reg by s alone, cls by u alone).
    """
    s, u = cls_scores.clamp(min=0.0), ious.clamp(min=0.0)
    return s ** (1.0 - mix_lambda) * u**mix_lambda, u ** (1.0 - mix_lambda) * s**mix_lambda


def candidate_indices(
    anchors: Tensor, num_anchors_per_level: List[int], gt_boxes: Tensor, k: int
) -> Tensor:
    """(C, M) indices of, per level, the min(k, n_l) anchors whose centres are nearest each GT's
    centre (ATSS's candidate stage, METHODS.md §1.1 step 2)."""
    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    distances = torch.cdist(anchor_centers, gt_centers)  # (R, M)
    indices, start = [], 0
    for count in num_anchors_per_level:
        nearest = distances[start : start + count].topk(min(k, count), dim=0, largest=False).indices
        indices.append(nearest + start)
        start += count
    return torch.cat(indices, dim=0)


@torch.no_grad()
def mutual_bags(
    anchors: Tensor,
    num_anchors_per_level: List[int],
    gt_boxes: Tensor,
    cls_scores: Tensor,
    ious: Tensor,
    anchor_ious: Tensor,
    *,
    topk: int = 9,
    num_anchors_per_location: int = 1,
    gate_thresh: float = 0.05,
    gate_shape: float = 0.5,
    mix_lambda: float = 0.2,
    rank_topk: int = 9,
    rank_weight: str = "linear",
    rank_tau: float = 3.0,
) -> MutualBags:
    """
    Builds MuSu's per-GT candidate bags and weights each bag member for the two heads.

    1. Candidates of GT g: per level the topk * A anchors nearest g's centre whose centres lie
       inside g.
    2. Gate: a candidate joins g's bag if s^b * u^(1 - b) >= gate_thresh (b = gate_shape); the
       candidate with the highest gate score always joins, so no GT is left without samples.
    3. An anchor in several bags stays in the bag of the GT it overlaps most (anchor IoU).
    4. Each bag is ranked twice (:func:`mixed_keys`); ranks become weights
       (:func:`rank_to_weight`).

    Args:
        anchors (Tensor): (R, 4).
        gt_boxes (Tensor): (M, 4).
        cls_scores (Tensor): (R, M) detached probability of GT g's class at anchor a.
        ious (Tensor): (R, M) detached IoU of anchor a's predicted box with GT g.
        anchor_ious (Tensor): (R, M) IoU of the anchor itself with GT g (bag conflicts).

    Returns:
        MutualBags.
    """
    num_anchors, num_gt = len(anchors), len(gt_boxes)
    device = anchors.device
    if num_gt == 0:
        zeros = torch.zeros(num_anchors, device=device)
        return MutualBags(
            torch.full((num_anchors,), -1, dtype=torch.long, device=device),
            zeros,
            zeros.clone(),
            torch.zeros(0, dtype=torch.long, device=device),
            torch.zeros(0, dtype=torch.bool, device=device),
        )
    cand = candidate_indices(
        anchors, num_anchors_per_level, gt_boxes, topk * num_anchors_per_location
    )  # (C, M)
    cols = torch.arange(num_gt, device=device).expand_as(cand)
    centers = ((anchors[:, :2] + anchors[:, 2:]) / 2)[cand]  # (C, M, 2)
    ltrb = torch.cat([centers - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - centers], dim=-1)
    inside = ltrb.min(dim=-1).values > CENTER_INSIDE_EPS  # (C, M)

    s, u = cls_scores[cand, cols], ious[cand, cols]  # (C, M)
    gate = s.clamp(min=0) ** gate_shape * u.clamp(min=0) ** (1.0 - gate_shape)
    gate = torch.where(inside, gate, -1.0)
    best = gate.argmax(dim=0)  # (M,)
    in_bag = inside & (gate >= gate_thresh)
    in_bag[best, torch.arange(num_gt, device=device)] |= inside[
        best, torch.arange(num_gt, device=device)
    ]

    # Conflicts: the GT with the largest anchor IoU keeps the anchor.
    owner_iou = torch.full((num_anchors, num_gt), -1.0, device=device)
    owner_iou[cand[in_bag], cols[in_bag]] = anchor_ious[cand[in_bag], cols[in_bag]].float()
    best_iou, owner = owner_iou.max(dim=1)  # (R,)
    matched_idxs = torch.where(best_iou >= 0, owner, -1)
    in_bag &= owner[cand] == cols

    reg_key, cls_key = mixed_keys(s, u, mix_lambda)
    reg_rank = _ranks_within_columns(torch.where(in_bag, reg_key, -1.0))
    cls_rank = _ranks_within_columns(torch.where(in_bag, cls_key, -1.0))
    reg_w = torch.where(in_bag, rank_to_weight(reg_rank, rank_weight, rank_topk, rank_tau), 0.0)
    cls_w = torch.where(in_bag, rank_to_weight(cls_rank, rank_weight, rank_topk, rank_tau), 0.0)
    reg_weights = torch.zeros(num_anchors, device=device)
    cls_weights = torch.zeros(num_anchors, device=device)
    reg_weights[cand[in_bag]] = reg_w[in_bag]
    cls_weights[cand[in_bag]] = cls_w[in_bag]

    bag_sizes = in_bag.sum(dim=0)
    top_agree = (reg_rank == 0) & (cls_rank == 0) & in_bag
    return MutualBags(matched_idxs, reg_weights, cls_weights, bag_sizes, top_agree.any(dim=0))


def _ranks_within_columns(keys: Tensor) -> Tensor:
    """(C, M) 0-based descending rank of every entry within its column (ties by position)."""
    order = keys.argsort(dim=0, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(0, order, torch.arange(len(keys), device=keys.device)[:, None].expand_as(order))
    return ranks
