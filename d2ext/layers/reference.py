"""Pure-PyTorch references of every d2ext op.

They are the test oracle for the compiled kernels and the fallback when d2ext._C is not built.
Each has the signature of the public function it stands for, and follows the same conventions
(see the C++ headers under csrc/): boxes are (x1, y1, x2, y2); an inverted box counts as
zero-area; a pair with an empty union has IoU 0.
"""
import torch
from torch import Tensor


def _area(boxes: Tensor) -> Tensor:
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou") -> Tensor:
    """IoU or GIoU between every box of ``boxes1`` (N, 4) and of ``boxes2`` (M, 4): (N, M)."""
    a = boxes1[:, None, :]
    b = boxes2[None, :, :]
    inter_wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(
        min=0
    )
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = _area(a) + _area(b) - inter
    iou = torch.where(union > 0, inter / union, torch.zeros_like(inter))
    if mode == "iou":
        return iou
    enclose_wh = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(
        min=0
    )
    enclose = enclose_wh[..., 0] * enclose_wh[..., 1]
    return torch.where(enclose > 0, iou - (enclose - union) / enclose, iou)
