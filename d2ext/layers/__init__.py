"""d2ext's ops. Each runs a compiled kernel (d2ext._C) or, if that is not built, its reference
in :mod:`d2ext.layers.reference` after one warning."""

from ._extension import cpu_capability, has_ops
from .assign import atss_assign
from .deform_conv import DeformConv2d, deform_conv2d, sampled_deform_conv2d
from .fused_losses import (
    ap_loss,
    distribution_focal_loss,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)
from .iou import aligned_iou, combined_iou, giou_loss, pairwise_iou
from .logit_product import logit_of_product

__all__ = [
    "DeformConv2d",
    "aligned_iou",
    "ap_loss",
    "atss_assign",
    "combined_iou",
    "cpu_capability",
    "deform_conv2d",
    "distribution_focal_loss",
    "giou_loss",
    "has_ops",
    "logit_of_product",
    "pairwise_iou",
    "quality_focal_loss",
    "sampled_deform_conv2d",
    "sigmoid_focal_loss",
    "varifocal_loss",
]
