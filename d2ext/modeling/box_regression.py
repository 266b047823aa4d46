"""A TorchScript class version of Detectron2's ``Box2BoxTransformLinear`` (FCOS's ltrb coding,
GFL's and VFNet's box coding): Detectron2's is a plain Python class (and passes ``axis=`` to
torch.stack), which ``torch.jit.script`` cannot compile. Same operations, so the same numbers."""

import torch
from detectron2.modeling.box_regression import Box2BoxTransformLinear as _D2Box2BoxTransformLinear
from torch import Tensor
from torch.nn import functional as F


@torch.jit.script
class ScriptableBox2BoxTransformLinear:
    """Detectron2's ``Box2BoxTransformLinear``: ltrb distances from the (square) source box's
    centre, in pixels or (``normalize_by_size``) in the source box's size."""

    def __init__(self, normalize_by_size: bool = True):
        self.normalize_by_size = normalize_by_size

    def get_deltas(self, src_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        src_ctr_x = 0.5 * (src_boxes[:, 0] + src_boxes[:, 2])
        src_ctr_y = 0.5 * (src_boxes[:, 1] + src_boxes[:, 3])

        target_l = src_ctr_x - target_boxes[:, 0]
        target_t = src_ctr_y - target_boxes[:, 1]
        target_r = target_boxes[:, 2] - src_ctr_x
        target_b = target_boxes[:, 3] - src_ctr_y

        deltas = torch.stack((target_l, target_t, target_r, target_b), dim=1)
        if self.normalize_by_size:
            stride_w = src_boxes[:, 2] - src_boxes[:, 0]
            stride_h = src_boxes[:, 3] - src_boxes[:, 1]
            strides = torch.stack([stride_w, stride_h, stride_w, stride_h], dim=1)
            deltas = deltas / strides
        return deltas

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        # A valid box: negative distances are clamped to 0 (Detectron2's).
        deltas = F.relu(deltas)
        boxes = boxes.to(deltas.dtype)

        ctr_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
        ctr_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
        if self.normalize_by_size:
            stride_w = boxes[:, 2] - boxes[:, 0]
            stride_h = boxes[:, 3] - boxes[:, 1]
            strides = torch.stack([stride_w, stride_h, stride_w, stride_h], dim=1)
            deltas = deltas * strides

        l = deltas[:, 0::4]  # noqa: E741
        t = deltas[:, 1::4]
        r = deltas[:, 2::4]
        b = deltas[:, 3::4]

        pred_boxes = torch.zeros_like(deltas)
        pred_boxes[:, 0::4] = ctr_x[:, None] - l  # x1
        pred_boxes[:, 1::4] = ctr_y[:, None] - t  # y1
        pred_boxes[:, 2::4] = ctr_x[:, None] + r  # x2
        pred_boxes[:, 3::4] = ctr_y[:, None] + b  # y2
        return pred_boxes


def scriptable_box2box_transform(transform):
    """``transform``, with Detectron2's Box2BoxTransformLinear replaced by the scriptable
    equivalent (Box2BoxTransform is scriptable already)."""
    if type(transform) is _D2Box2BoxTransformLinear:
        return ScriptableBox2BoxTransformLinear(transform.normalize_by_size)
    return transform
