"""VFNet's head (METHODS.md §4.1): 3-conv GN towers, an initial box exp(Scale * x) * reg_denom
per level, star-shaped deformable sampling at that box's corners, edge midpoints and centre, and
on those features a per-side refinement factor and the IoU-aware classification score (IACS).

The deformable convolutions are d2ext.layers.DeformConv2d: torchvision's layer (no private DCN
build), computed by d2ext's compiled op on the CPU and run in float32 under autocast.
"""

import math
from typing import List, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from torch import Tensor, nn
from torch.jit import Final
from torch.nn import functional as F

from d2ext.layers.deform_conv import DeformConv2d
from d2ext.modeling.input_checks import check_dense_head_args, check_each

from .atss_base import deformable_last_convs, dense_head_args, drop_tower_conv_bias

# exp() of the box branches is taken of min(Scale * x, MAX_LOG_FACTOR): not in the official code
# (METHODS.md §9.6), a guard against overflow to inf early in training; a side of
# reg_denom * 1000 px (>= 64k px) is far beyond any image, so trained models never reach it.
MAX_LOG_FACTOR = math.log(1000.0)


def star_offsets(boxes: Tensor, stride: float, grad_mul: float = 0.1) -> Tensor:
    """
    Offsets that move a 3x3 deformable convolution's sampling points to the star of each box:
    its 4 corners, 4 edge midpoints and its centre (the location itself).

    Args:
        boxes (Tensor): (N, 4, H, W) initial boxes as (l, t, r, b) pixel distances from each
            location.
        stride (float): the level's stride (pixels per feature-map cell).
        grad_mul (float): fraction of the offsets' gradient passed back to ``boxes``
            (VFNet's gradient_mul, 0.1): b' = ((1 - g) stopgrad(b) + g b) / stride.

    Returns:
        (N, 18, H, W) offsets relative to the regular 3x3 grid, ordered (dy_0, dx_0, dy_1, ...)
        for kernel point k = 3 (i + 1) + (j + 1), row i and column j in {-1, 0, 1}: the layout
        of ``torchvision.ops.deform_conv2d``.
    """
    scaled = ((1 - grad_mul) * boxes.detach() + grad_mul * boxes) / stride
    left, top, right, bottom = scaled.unbind(dim=1)
    zero = torch.zeros_like(left)
    rows = (-top, zero, bottom)  # y of the sampling points of kernel rows -1, 0, 1
    cols = (-left, zero, right)  # x of kernel columns -1, 0, 1
    offsets = []
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            offsets += [y - (i - 1), x - (j - 1)]
    return torch.stack(offsets, dim=1)


def check_dcn_inputs(
    offsets: Tensor, reg_feature: Tensor, cls_feature: Tensor, level: int, stride: float
):
    """Raises FloatingPointError naming what is NaN/Inf among a level's deformable-conv inputs.
    torchvision's CPU deform_conv2d reads out of bounds on NaN offsets and kills the process
    (SIGSEGV) instead of raising, so a diverging run or a NaN input must stop here."""
    inputs = {
        "star offsets (from the initial boxes)": offsets,
        "regression-tower features": reg_feature,
        "classification-tower features": cls_feature,
    }
    finite = torch.stack([torch.isfinite(t).all() for t in inputs.values()]).tolist()  # one sync
    if all(finite):
        return
    bad = [name for name, ok in zip(inputs, finite) if not ok]
    raise FloatingPointError(
        f"VFNet head, level {level} (stride {stride:g}): non-finite (NaN/Inf) {' and '.join(bad)} "
        f"before the deformable convolution; the training diverged (e.g. SOLVER.BASE_LR too high) "
        f"or the input is not finite (MODEL.PIXEL_MEAN / PIXEL_STD, images)."
    )


def _check_finite_scripted(
    offsets: Tensor, reg_feature: Tensor, cls_feature: Tensor, level: int
) -> None:
    """check_dcn_inputs in a scripted model (TorchScript has no str.join or format specs)."""
    finite = (
        torch.isfinite(offsets).all()
        & torch.isfinite(reg_feature).all()
        & torch.isfinite(cls_feature).all()
    )
    if not bool(finite):
        raise FloatingPointError(
            "VFNet head, level " + str(level) + ": non-finite (NaN/Inf) star offsets or tower "
            "features before the deformable convolution; the input is not finite"
        )


def _conv_norm_relu(channels: int, norm) -> nn.Sequential:
    layers = [nn.Conv2d(channels, channels, kernel_size=3, padding=1)]
    if norm:
        layers.append(get_norm(norm, channels))
    return nn.Sequential(*layers, nn.ReLU())


class VFNetHead(RetinaNetHead):
    """
    RetinaNet's towers (``cls_subnet``, ``bbox_subnet``; 3 GN convs in VFNet) with:

    - the initial box: ``reg_init_conv`` (conv + norm + ReLU) on the regression tower, then
      ``bbox_pred`` to (l, t, r, b) = exp(scale_l * x) * reg_denom_l pixels;
    - a star deformable conv on the regression tower -> ReLU -> ``refine_pred`` giving the
      per-side factor exp(refine_scale_l * x) applied to the detached initial box;
    - a star deformable conv on the classification tower -> ReLU -> ``cls_score`` (IACS logits).
    """

    # TorchScript reads module-level floats as closed-over globals, not constants; the float
    # lists are plain attributes (not buffers: checkpoints keep their keys).
    max_log_factor: Final[float] = MAX_LOG_FACTOR
    strides: List[float]
    reg_denoms: List[float]

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        conv_dims: List[int],
        strides: Sequence[int],
        reg_denoms: Sequence[float] = (64, 128, 256, 512, 1024),
        dcn_grad_mul: float = 0.1,
        num_anchors: int = 1,
        norm="GN",
        tower_conv_bias: bool = True,
        dcn_on_last_conv: bool = False,
        **kwargs,
    ):
        """
        Args:
            input_shape, conv_dims, norm, kwargs: see :class:`RetinaNetHead`.
            strides: stride of each input level (the star offsets are in feature cells).
            reg_denoms: pixel scale of the initial box on each level (FCOS regress-range upper
                bounds, the last doubled).
            dcn_grad_mul: fraction of the offsets' gradient that reaches the initial box.
            dcn_on_last_conv: the last conv of both towers is a modulated deformable conv
                (DCNv2) that predicts its own offsets and mask (mmdetection's
                ``dcn_on_last_conv=True``, the ``mdconv`` VFNet configs; MODEL.VFNET.DCN_ON_LAST_CONV).
        """
        if num_anchors != 1:
            raise ValueError(
                f"VFNet needs one anchor per location (MODEL.ANCHOR_GENERATOR), got {num_anchors}"
            )
        if not (len(strides) == len(reg_denoms) == len(input_shape)):
            raise ValueError(
                f"MODEL.VFNET.REG_DENOMS ({list(reg_denoms)}) and the strides ({list(strides)}) "
                f"need one entry per head level ({len(input_shape)})"
            )
        if not 0.0 <= dcn_grad_mul <= 1.0:
            raise ValueError(f"MODEL.VFNET.DCN_GRAD_MUL must be in [0, 1], got {dcn_grad_mul}")
        check_dense_head_args(
            None, kwargs.get("num_classes"), len(conv_dims), kwargs.get("prior_prob", 0.01)
        )
        check_each(
            "MODEL.VFNET.REG_DENOMS (model.head.reg_denoms)", reg_denoms, low=0, low_open=True
        )
        super().__init__(
            input_shape=input_shape, conv_dims=conv_dims, num_anchors=1, norm=norm, **kwargs
        )
        channels = conv_dims[-1]
        self.strides = [float(s) for s in strides]
        self.reg_denoms = [float(d) for d in reg_denoms]
        self.dcn_grad_mul = dcn_grad_mul
        self.reg_init_conv = _conv_norm_relu(channels, norm)
        # Plain DCNv1, no bias (as mmcv's DeformConv2d in the official head).
        self.refine_dcn = DeformConv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.refine_pred = nn.Conv2d(channels, 4, kernel_size=3, padding=1)
        self.cls_dcn = DeformConv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        for module in (self.reg_init_conv[0], self.refine_dcn, self.refine_pred, self.cls_dcn):
            nn.init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
        if not tower_conv_bias:
            drop_tower_conv_bias(self.cls_subnet, self.bbox_subnet, self.reg_init_conv)
        self.dcn_on_last_conv = dcn_on_last_conv
        if dcn_on_last_conv:
            deformable_last_convs(self.cls_subnet, self.bbox_subnet, bias=tower_conv_bias)
        self.scales = nn.Parameter(torch.ones(len(input_shape)))
        self.refine_scales = nn.Parameter(torch.ones(len(input_shape)))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        node = cfg.MODEL.VFNET
        return {
            **dense_head_args(cfg, "VFNET", input_shape),
            "strides": [s.stride for s in input_shape],
            "reg_denoms": node.REG_DENOMS,
            "dcn_grad_mul": node.DCN_GRAD_MUL,
        }

    def forward(self, features: List[Tensor]):
        """
        Returns:
            logits: per level (N, K, Hi, Wi) IACS logits.
            init_boxes, refined_boxes: per level (N, 4, Hi, Wi) (l, t, r, b) pixel distances
            from each location, fp32.
        """
        logits, init_boxes, refined_boxes = [], [], []
        for level, feature in enumerate(features):
            cls_feature = self.cls_subnet(feature)
            reg_feature = self.bbox_subnet(feature)
            init_log = self.bbox_pred(self.reg_init_conv(reg_feature)).float() * self.scales[level]
            init = torch.exp(init_log.clamp(max=self.max_log_factor)) * self.reg_denoms[level]
            # Offsets in the feature dtype (e.g. a float64 head); under autocast DeformConv2d
            # runs both in float32.
            offsets = star_offsets(init, self.strides[level], self.dcn_grad_mul).to(
                reg_feature.dtype
            )
            if torch.jit.is_scripting():
                _check_finite_scripted(offsets, reg_feature, cls_feature, level)
            else:
                check_dcn_inputs(offsets, reg_feature, cls_feature, level, self.strides[level])
            refine_log = self.refine_pred(F.relu(self.refine_dcn(reg_feature, offsets))).float()
            factor = torch.exp(
                (refine_log * self.refine_scales[level]).clamp(max=self.max_log_factor)
            )
            logits.append(self.cls_score(F.relu(self.cls_dcn(cls_feature, offsets))))
            init_boxes.append(init)
            refined_boxes.append(factor * init.detach())
        return logits, init_boxes, refined_boxes
