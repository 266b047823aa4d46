"""Autocast behaviour of d2ext's compiled ops: under torch.autocast (CPU bfloat16, CUDA float16)
their floating inputs are cast to float32 first, so assignment, IoUs and losses are computed and
returned in float32 however the head's outputs reach them (the Python wrappers upcast too; this
covers direct torch.ops.d2ext calls, torch.compile and export). deform_conv2d too: its sampling
offsets lose too much in half precision, as the DeformConv2d layer's docstring says."""

import torch

OPS = (
    "pairwise_iou",
    "combined_iou",
    "aligned_iou",
    "giou_loss",
    "atss_assign",
    "sigmoid_focal_loss",
    "quality_focal_loss",
    "varifocal_loss",
    "distribution_focal_loss",
    "ap_loss",
    "deform_conv2d",
)
AUTOCAST_DEVICES = ("cpu", "cuda")

for _name in OPS:
    for _device in AUTOCAST_DEVICES:
        torch.library.register_autocast(f"d2ext::{_name}", _device, torch.float32)
