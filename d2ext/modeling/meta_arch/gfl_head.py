"""GFL's head (METHODS.md §3.1, §3.5): ATSS towers without centerness, box sides as discrete
distributions over REG_MAX + 1 bins, and GFL v2's distribution-guided quality predictor."""

from typing import List

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from torch import Tensor, nn
from torch.nn import functional as F

from d2ext.modeling.input_checks import check_dense_head_args, check_range

from .atss_base import deformable_last_convs, dense_head_args, drop_tower_conv_bias


def integral(distribution_logits: Tensor) -> Tensor:
    """
    Expected value of each side's distribution: (..., 4 * (n + 1)) logits -> (..., 4) distances,
    in bins (strides), sum_i i * softmax(z)_i.
    """
    logits = distribution_logits.unflatten(-1, (4, -1))
    bins = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return F.softmax(logits, dim=-1) @ bins


def distribution_statistics(distribution_logits: Tensor, topk: int, add_mean: bool) -> Tensor:
    """
    GFL v2's input to the DGQP: for each of the 4 sides, the topk largest bin probabilities
    (sorted, largest first) and, with add_mean, their mean. (N, 4 * (n + 1), H, W) logits ->
    (N, 4 * (topk + add_mean), H, W).
    """
    n, _, h, w = distribution_logits.shape
    prob = F.softmax(distribution_logits.view(n, 4, -1, h, w), dim=2)
    top = prob.topk(topk, dim=2).values
    if add_mean:
        top = torch.cat([top, top.mean(dim=2, keepdim=True)], dim=2)
    return top.flatten(1, 2)


class DGQP(nn.Module):
    """Distribution-guided quality predictor: 1x1 conv -> ReLU -> 1x1 conv to one quality logit
    (sigmoid outside, so losses can stay in logit space)."""

    def __init__(self, reg_max: int, topk: int = 4, add_mean: bool = True, channels: int = 64):
        super().__init__()
        if not 1 <= topk <= reg_max + 1:
            raise ValueError(
                f"MODEL.GFL.DGQP_TOPK must be in [1, REG_MAX + 1 = {reg_max + 1}], got {topk}"
            )
        self.topk, self.add_mean = topk, add_mean
        self.conv1 = nn.Conv2d(4 * (topk + int(add_mean)), channels, 1)
        self.conv2 = nn.Conv2d(channels, 1, 1)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0)

    def forward(self, distribution_logits: Tensor) -> Tensor:
        stats = distribution_statistics(distribution_logits, self.topk, self.add_mean)
        return self.conv2(F.relu(self.conv1(stats)))


class GFLHead(RetinaNetHead):
    """
    RetinaNet's towers (GN) with a joint class-quality classifier and a regressor of
    4 x (reg_max + 1) distribution logits scaled per level; with ``dgqp`` also GFL v2's
    quality logit per location.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        conv_dims: List[int],
        reg_max: int = 16,
        dgqp: bool = False,
        dgqp_topk: int = 4,
        dgqp_add_mean: bool = True,
        dgqp_channels: int = 64,
        num_anchors: int = 1,
        tower_conv_bias: bool = True,
        dcn_on_last_conv: bool = False,
        **kwargs,
    ):
        if num_anchors != 1:
            raise ValueError(
                f"GFL needs one anchor per location (MODEL.ANCHOR_GENERATOR), got {num_anchors}"
            )
        check_dense_head_args(
            None, kwargs.get("num_classes"), len(conv_dims), kwargs.get("prior_prob", 0.01)
        )
        # n = 0 would leave one bin per side: no distribution (DFL needs two bins).
        check_range("MODEL.GFL.REG_MAX (model.head.reg_max)", reg_max, 1, integer=True)
        if dgqp:
            check_range(
                "MODEL.GFL.DGQP_CHANNELS (model.head.dgqp_channels)", dgqp_channels, 1, integer=True
            )
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, num_anchors=1, **kwargs)
        if not tower_conv_bias:
            drop_tower_conv_bias(self.cls_subnet, self.bbox_subnet)
        if dcn_on_last_conv:
            deformable_last_convs(self.cls_subnet, self.bbox_subnet, bias=tower_conv_bias)
        self.reg_max = reg_max
        self.bbox_pred = nn.Conv2d(conv_dims[-1], 4 * (reg_max + 1), kernel_size=3, padding=1)
        nn.init.normal_(self.bbox_pred.weight, std=0.01)
        nn.init.constant_(self.bbox_pred.bias, 0)
        self.scales = nn.Parameter(torch.ones(len(input_shape)))
        self.dgqp = DGQP(reg_max, dgqp_topk, dgqp_add_mean, dgqp_channels) if dgqp else None

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        node = cfg.MODEL.GFL
        return {
            **dense_head_args(cfg, "GFL", input_shape),
            "reg_max": node.REG_MAX,
            "dgqp": node.DGQP,
            "dgqp_topk": node.DGQP_TOPK,
            "dgqp_add_mean": node.DGQP_ADD_MEAN,
            "dgqp_channels": node.DGQP_CHANNELS,
        }

    def forward(self, features: List[Tensor]):
        """
        Returns:
            logits: per level (N, K, Hi, Wi); distributions: per level (N, 4 * (reg_max + 1), Hi, Wi)
            (fp32); with DGQP also quality: per level (N, 1, Hi, Wi) logits.
        """
        logits, distributions, quality = [], [], []
        for level, feature in enumerate(features):
            logits.append(self.cls_score(self.cls_subnet(feature)))
            dist = (self.bbox_pred(self.bbox_subnet(feature)) * self.scales[level]).float()
            distributions.append(dist)
            if self.dgqp is not None:
                quality.append(self.dgqp(dist))
        return (
            (logits, distributions, quality) if self.dgqp is not None else (logits, distributions)
        )
