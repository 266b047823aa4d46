"""
Libra R-CNN's proposal samplers (Pang et al., "Libra R-CNN: Towards Balanced Learning for Object
Detection", CVPR 2019, §3.1; METHODS.md §7.1-7.2), as pure functions in the style of Detectron2's
`detectron2.modeling.sampling.subsample_labels`.

Everything is vectorised: a uniform random subset of size q of a group is "the q members with
the smallest random keys", so per-group quotas are one sort by (group, key) and a rank compare.
Each stage draws fresh keys, so every top-up is uniform over what is left, as in the reference.
Pass a seeded `torch.Generator` to reproduce a draw; without one the global RNG is used (seeded
by Detectron2's SEED).
"""

from typing import Optional, Tuple

import torch
from detectron2.layers import nonzero_tuple

__all__ = [
    "iou_balanced_neg_sample",
    "instance_balanced_pos_sample",
    "iou_bin_index",
    "libra_subsample_labels",
    "uniform_sample",
]


def _random_keys(
    n: int, device: torch.device, generator: Optional[torch.Generator]
) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gen_device).to(device)


def _smallest_keys(
    mask: torch.Tensor, k: int, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """Bool mask of k members of `mask` drawn uniformly (k <= mask.sum())."""
    chosen = torch.zeros_like(mask)
    if k <= 0:
        return chosen
    keys = _random_keys(mask.numel(), mask.device, generator).masked_fill(~mask, 2.0)
    chosen[torch.topk(keys, k, largest=False).indices] = True
    return chosen


def _quota_per_group(
    groups: torch.Tensor, quota: torch.Tensor, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """
    Bool mask taking min(quota[g], |group g|) members of every group g uniformly at random.

    Args:
        groups: (N,) long, a group in [0, G) per element, or -1 for "not a candidate".
        quota: (G,) long.
    """
    num_groups = quota.numel()
    groups = torch.where(groups < 0, torch.full_like(groups, num_groups), groups)
    quota = torch.cat([quota, quota.new_zeros(1)])  # the non-candidates' group takes nothing
    # Random order, then a stable sort by group: group-major with a random order inside groups.
    order = torch.argsort(_random_keys(groups.numel(), groups.device, generator))
    order = order[torch.sort(groups[order], stable=True).indices]
    sorted_groups = groups[order]
    counts = torch.bincount(sorted_groups, minlength=num_groups + 1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(groups.numel(), device=groups.device) - starts[sorted_groups]
    chosen = torch.zeros(groups.numel(), dtype=torch.bool, device=groups.device)
    chosen[order] = rank < quota[sorted_groups]
    return chosen


def uniform_sample(
    candidates: torch.Tensor, num_expected: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Indices of min(num_expected, candidates.sum()) members of the bool mask, uniformly."""
    num = min(int(num_expected), int(candidates.sum()))
    return nonzero_tuple(_smallest_keys(candidates, num, generator))[0]


def iou_bin_index(
    max_ious: torch.Tensor, upper: torch.Tensor, num_bins: int, lower: float = 0.0
) -> torch.Tensor:
    """
    IoU bin of every proposal: bin k = [lower + k*w, lower + (k+1)*w), w = (upper - lower) / K,
    half-open as the reference (a proposal at IoU == upper is in no bin); -1 outside all bins.
    """
    width = (upper - lower) / num_bins
    k = torch.arange(num_bins + 1, device=max_ious.device, dtype=max_ious.dtype)
    edges = lower + k * width
    index = (max_ious[:, None] >= edges[None, :num_bins]).sum(dim=1) - 1
    inside = (max_ious >= edges[0]) & (max_ious < edges[num_bins])
    return torch.where(inside, index, torch.full_like(index, -1))


def iou_balanced_neg_sample(
    max_ious: torch.Tensor,
    negative: torch.Tensor,
    num_expected: int,
    *,
    num_bins: int = 3,
    floor_thresh: float = 0.0,
    floor_fraction: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """
    IoU-balanced negative sampling (Libra R-CNN; mmdet's IoUBalancedNegSampler, METHODS.md §7.1).

    Args:
        max_ious: (N,) max IoU of every proposal with any GT. All proposals, positives and
            GT-as-proposals included: the top bin edge is their maximum (usually 1.0).
        negative: (N,) bool, the proposals labelled background.
        num_expected: how many negatives to return (fewer only if fewer exist).
        num_bins: K; the IoU set is split into K equal-width bins, each sampled up to
            floor(N_iou / K), and the shortfall topped up uniformly from the rest of the IoU set.
            K < 2 samples the IoU set uniformly.
        floor_thresh: tau. > 0: negatives with IoU in [0, tau) form the floor set, the bins
            cover [tau, max IoU); 0 (default): the floor set is IoU == 0, the bins cover IoU > 0,
            so IoU-0 negatives only top up what the bins leave; -1: no floor set, every negative
            (IoU 0 included) goes into bins over [0, max IoU). mmdet's Libra config says -1, but
            its IoUBalancedNegSampler rewrites -1 to 0 on the sampler the first time it runs, so
            training is the 0 behaviour from the second image on (the Libra repo's final config
            says 0 outright); -1 here is the literal reading, for ablations.
        floor_fraction: share of `num_expected` drawn uniformly from the floor set; the IoU set
            gets floor(num_expected * (1 - floor_fraction)).

    Returns:
        (min(num_expected, negative.sum()),) long indices into the N proposals, sorted.
    """
    if not 0.0 <= floor_fraction <= 1.0:
        raise ValueError(f"floor_fraction must be in [0, 1], got {floor_fraction}")
    if not (floor_thresh >= 0 or floor_thresh == -1):
        raise ValueError(f"floor_thresh must be >= 0 or -1, got {floor_thresh}")
    num_neg = int(negative.sum())
    if num_neg <= num_expected:
        return nonzero_tuple(negative)[0]
    if floor_thresh > 0:
        floor = (max_ious >= 0) & (max_ious < floor_thresh)
        iou_set = max_ious >= floor_thresh
        lower = floor_thresh
    elif floor_thresh == 0:
        floor = max_ious == 0
        iou_set = max_ious > 0
        lower = 0.0
    else:  # -1: no floor set
        floor = torch.zeros_like(negative)
        iou_set = max_ious > floor_thresh
        lower = 0.0
    floor &= negative
    iou_set &= negative

    num_iou = int(num_expected * (1 - floor_fraction))
    if int(iou_set.sum()) <= num_iou:
        chosen = iou_set.clone()
    elif num_bins >= 2:
        bins = iou_bin_index(max_ious, max_ious.max(), num_bins, lower)
        bins = torch.where(iou_set, bins, torch.full_like(bins, -1))
        quota = torch.full((num_bins,), num_iou // num_bins, dtype=torch.long, device=bins.device)
        chosen = _quota_per_group(bins, quota, generator)
        chosen |= _smallest_keys(iou_set & ~chosen, num_iou - int(chosen.sum()), generator)
    else:
        chosen = _smallest_keys(iou_set, num_iou, generator)

    num_floor = min(num_expected - int(chosen.sum()), int(floor.sum()))
    chosen |= _smallest_keys(floor, num_floor, generator)
    # Final top-up from every remaining negative.
    chosen |= _smallest_keys(negative & ~chosen, num_expected - int(chosen.sum()), generator)
    return nonzero_tuple(chosen)[0]


def instance_balanced_pos_sample(
    matched_idxs: torch.Tensor,
    positive: torch.Tensor,
    num_expected: int,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """
    Instance-balanced positive sampling (Libra R-CNN; mmdet's InstanceBalancedPosSampler,
    METHODS.md §7.2): each GT matched by a positive gets a quota of round(num_expected / #GT) + 1,
    a short GT gives all it has, the total is topped up uniformly from the other positives, or cut
    uniformly to `num_expected`.

    Args:
        matched_idxs: (N,) long, the GT each proposal is matched to.
        positive: (N,) bool, the foreground proposals.

    Returns:
        (min(num_expected, positive.sum()),) long indices, sorted.
    """
    if int(positive.sum()) <= num_expected:
        return nonzero_tuple(positive)[0]
    gt_ids, groups = torch.unique(matched_idxs[positive], return_inverse=True)
    num_per_gt = int(round(num_expected / gt_ids.numel()) + 1)  # Python round, as the reference
    all_groups = torch.full_like(matched_idxs, -1)
    all_groups[positive] = groups
    quota = torch.full_like(gt_ids, num_per_gt)
    chosen = _quota_per_group(all_groups, quota, generator)
    num_chosen = int(chosen.sum())
    if num_chosen < num_expected:
        chosen |= _smallest_keys(positive & ~chosen, num_expected - num_chosen, generator)
    elif num_chosen > num_expected:
        chosen = _smallest_keys(chosen, num_expected, generator)
    return nonzero_tuple(chosen)[0]


def libra_subsample_labels(
    labels: torch.Tensor,
    num_samples: int,
    positive_fraction: float,
    bg_label: int,
    *,
    max_ious: Optional[torch.Tensor] = None,
    matched_idxs: Optional[torch.Tensor] = None,
    iou_balanced_neg: bool = True,
    num_bins: int = 3,
    floor_thresh: float = 0.0,
    floor_fraction: float = 0.0,
    instance_balanced_pos: bool = True,
    neg_pos_ub: int = -1,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    `detectron2.modeling.sampling.subsample_labels` with Libra R-CNN's samplers: the same
    counts (at most positive_fraction * num_samples positives, negatives fill the rest), drawn by
    `instance_balanced_pos_sample` (needs `matched_idxs`) and `iou_balanced_neg_sample` (needs
    `max_ious`), or uniformly when switched off. `neg_pos_ub` >= 0 additionally caps negatives
    at neg_pos_ub * max(1, #sampled positives) (mmdet's RandomSampler bound, used by Libra's RPN).

    Args:
        labels: (N,) -1 ignore, `bg_label` background, anything else foreground.

    Returns:
        pos_idx, neg_idx (Tensor): 1D long indices, together at most `num_samples`.
    """
    positive = (labels != -1) & (labels != bg_label)
    negative = labels == bg_label
    num_pos = int(num_samples * positive_fraction)
    if instance_balanced_pos:
        if matched_idxs is None:
            raise ValueError("instance-balanced positive sampling needs matched_idxs")
        pos_idx = instance_balanced_pos_sample(matched_idxs, positive, num_pos, generator)
    else:
        pos_idx = uniform_sample(positive, num_pos, generator)

    num_neg = num_samples - pos_idx.numel()
    if neg_pos_ub >= 0:
        num_neg = min(num_neg, int(neg_pos_ub * max(1, pos_idx.numel())))
    if iou_balanced_neg:
        if max_ious is None:
            raise ValueError("IoU-balanced negative sampling needs max_ious")
        neg_idx = iou_balanced_neg_sample(
            max_ious,
            negative,
            num_neg,
            num_bins=num_bins,
            floor_thresh=floor_thresh,
            floor_fraction=floor_fraction,
            generator=generator,
        )
    else:
        neg_idx = uniform_sample(negative, num_neg, generator)
    return pos_idx, neg_idx
