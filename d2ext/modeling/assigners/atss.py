"""ATSS label assignment (METHODS.md §1.1), shared by ATSS, DynamicATSS, GFL, VFNet and MuSu.

The work is done by the op :func:`d2ext.layers.atss_assign` (memory-linear kernel; the dense
reference in d2ext/layers/reference.py when the ops are not built).
Letters: R anchors (all levels concatenated), M ground-truth boxes.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from d2ext.layers import atss_assign as _atss_assign_op
from d2ext.layers.reference import CENTER_INSIDE_EPS  # noqa: F401  (re-exported)


@torch.no_grad()
def atss_assign(
    anchors: Tensor,
    num_anchors_per_level: List[int],
    gt_boxes: Tensor,
    topk: int = 9,
    num_anchors_per_location: int = 1,
    pred_boxes: Optional[Tensor] = None,
    anchor_weight: float = 1.0,
    pred_weight: float = 1.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """
    Assigns every anchor of one image to a ground-truth box or to the background.

    Candidates are the topk * A anchors per level nearest each GT (A = anchors per location);
    a candidate is positive if its IoU reaches the GT's mean + std IoU over its candidates and
    its centre is inside the GT; conflicts go to the highest IoU. With ``pred_boxes`` the IoU is
    DynamicATSS's combined anchor + predicted-box IoU. See :func:`d2ext.layers.atss_assign`.

    Returns:
        matched_idxs: (R,) int64, index of the matched GT or -1 for background.
        matched_ious: (R,) the matched (combined) IoU, 0 for background.
        thresholds: (M,) each GT's IoU threshold (mean + std rule); NaN with < 2 candidates.
    """
    return _atss_assign_op(
        anchors,
        num_anchors_per_level,
        gt_boxes,
        topk * num_anchors_per_location,
        pred_boxes,
        anchor_weight,
        pred_weight,
    )
