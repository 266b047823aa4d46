"""FCOS label assignment (Tian et al., ICCV 2019) as VFNet's USE_ATSS=False option
(METHODS.md §4.2): without centre sampling, as the official VFNet code calls FCOS's.

A point is a candidate of every GT box that strictly contains it and whose largest ltrb distance
from the point lies within the point's level range; it takes the candidate of smallest area (the
first such GT on ties) or the background. Dense (an R x M matrix), as Detectron2's FCOS: the
memory-linear path of d2ext is the ATSS op.
Letters: R points (all levels concatenated), M ground-truth boxes, L levels.
"""

import math
from typing import List, Sequence, Tuple

import torch
from detectron2.structures import Boxes
from torch import Tensor

# FCOS's ranges of the largest ltrb distance of P3-P7: (0, 64], [64, 128], ..., [512, inf).
DEFAULT_SIZE_BOUNDS = (64.0, 128.0, 256.0, 512.0)


def level_ranges(
    size_bounds: Sequence[float], num_points_per_level: List[int], device=None
) -> Tuple[Tensor, Tensor]:
    """
    Per-point (R,) lower and upper bounds of the largest ltrb distance: level l takes
    [size_bounds[l - 1], size_bounds[l]], the first level from -inf and the last to inf
    (``len(size_bounds) == L - 1``).
    """
    if len(size_bounds) != len(num_points_per_level) - 1:
        raise ValueError(
            f"size bounds {list(size_bounds)} must have one entry less than the levels ({len(num_points_per_level)})"
        )
    edges = [-math.inf, *[float(b) for b in size_bounds], math.inf]
    counts = torch.tensor(num_points_per_level, device=device)
    lower = torch.tensor(edges[:-1], device=device).repeat_interleave(counts)
    upper = torch.tensor(edges[1:], device=device).repeat_interleave(counts)
    return lower, upper


@torch.no_grad()
def fcos_assign(points: Tensor, lower: Tensor, upper: Tensor, gt_boxes: Tensor) -> Tensor:
    """
    Args:
        points: (R, 2) x, y.
        lower, upper: (R,) range of the largest ltrb distance a point may regress
            (:func:`level_ranges`), both ends included as in FCOS.
        gt_boxes: (M, 4) XYXY.

    Returns:
        (R,) int64: index of the matched GT, -1 for background.
    """
    if len(gt_boxes) == 0:
        return torch.full((len(points),), -1, dtype=torch.int64, device=points.device)
    ltrb = torch.cat(
        [points[:, None] - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - points[:, None]], dim=2
    )
    inside = ltrb.amin(dim=2) > 0  # (R, M)
    reach = ltrb.amax(dim=2)
    in_range = (reach >= lower[:, None]) & (reach <= upper[:, None])
    area = Boxes(gt_boxes).area()
    cost = torch.where(inside & in_range, area[None], math.inf)
    min_area, matched = cost.min(dim=1)  # the first minimum on ties
    matched[min_area == math.inf] = -1
    return matched
