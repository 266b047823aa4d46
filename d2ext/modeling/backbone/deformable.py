"""
Deformable ResNets on d2ext's :class:`~d2ext.layers.DeformConv2d` (torchvision's op; no
Detectron2 ``_C``): Detectron2's ``DeformBottleneckBlock`` rebuilt on that layer, DCN v1
(offsets) and modulated DCN v2 (offsets + sigmoid mask), with weight groups for ResNeXt.

Detectron2's own ``build_resnet_backbone`` builds its deformable stages from
``detectron2.layers.DeformConv`` / ``ModulatedDeformConv``, which need Detectron2's compiled
``_C``; d2ext's backbone builders (``build_resnet_fpn_p6p7_backbone``,
``build_resnet_any_width_fpn_backbone``, ``build_resnet_fpn_bfp_backbone``) build the ResNet of
``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` / ``DEFORM_MODULATED`` / ``DEFORM_NUM_GROUPS`` here instead.
The module and parameter names are Detectron2's (``conv2_offset``, ``conv2``, ``conv2.norm``), so a
Detectron2-format deformable checkpoint loads as it is; mmdetection's ``conv2.conv_offset`` is
converted (d2ext/checkpoint/torchvision.py).
"""

from typing import List, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock, ResNet
from torch import Tensor, nn

from d2ext.layers import DeformConv2d

BOTTLENECK_BLOCKS_PER_STAGE = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def split_offset_mask(offset_mask: Tensor, modulated: bool):
    """A deformable conv's offsets (and sigmoid mask when ``modulated``) from its offset conv's
    output: (2K offsets) or (2K offsets, K mask logits) per deformable group, the layout of
    Detectron2's DeformBottleneckBlock and mmcv's DCNv2 (offsets = the first two thirds)."""
    if not modulated:
        return offset_mask, None
    offset_x, offset_y, mask = torch.chunk(offset_mask, 3, dim=1)
    return torch.cat((offset_x, offset_y), dim=1), mask.sigmoid()


class DeformBottleneckBlock(CNNBlockBase):
    """
    Detectron2's ``DeformBottleneckBlock`` (the 3x3 conv deformable; stride on the 1x1 or the
    3x3 conv; ``num_groups`` weight groups for ResNeXt) on d2ext's DeformConv2d. ``conv2_offset``
    (a plain 3x3 conv with bias, zero-initialised) predicts 18 (v1) or 27 (modulated v2) channels
    per deformable group; ``conv2`` is the deformable conv without bias, ``conv2.norm`` its norm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm="BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        self.deform_modulated = deform_modulated
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=get_norm(norm, out_channels),
            )
        else:
            self.shortcut = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        offset_channels = (27 if deform_modulated else 18) * deform_num_groups
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            offset_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
        )
        self.conv2 = DeformConv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
            bias=False,
        )
        # Detectron2's names: the norm of the deformable conv is conv2.norm.
        self.conv2.add_module("norm", get_norm(norm, bottleneck_channels) or nn.Identity())
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        offset, mask = split_offset_mask(self.conv2_offset(out), self.deform_modulated)
        out = F.relu_(self.conv2.norm(self.conv2(out, offset, mask)))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


class DeformConvPack(nn.Module):
    """
    A deformable 3x3 conv that predicts its own offsets (and mask when ``modulated``) from its
    input with ``conv_offset`` (zero-initialised): mmcv's ``DeformConv2dPack`` (``DCN``) /
    ``ModulatedDeformConv2dPack`` (``DCNv2``), on d2ext's DeformConv2d: ``conv_offset`` as
    mmcv's, the deformable conv's ``weight`` / ``bias`` as ``conv.weight`` / ``conv.bias``
    (renamed on conversion). The last tower conv of mmdetection's ``dcn_on_last_conv`` heads.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
        modulated: bool = True,
    ):
        super().__init__()
        self.modulated = modulated
        k = kernel_size * kernel_size
        self.conv_offset = nn.Conv2d(
            in_channels,
            (3 if modulated else 2) * k * deform_groups,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=True,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.conv = DeformConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = split_offset_mask(self.conv_offset(x), self.modulated)
        return self.conv(x, offset, mask)


def make_resnet_stages(
    depth: int = 50,
    *,
    in_channels: int = 64,
    out_channels: int = 256,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = True,
    norm="BN",
    res5_dilation: int = 1,
    deform_on_per_stage: Sequence[bool] = (False, False, False, False),
    deform_modulated: bool = False,
    deform_num_groups: int = 1,
) -> List[List[CNNBlockBase]]:
    """
    The res2..res5 stages of a bottleneck ResNet / ResNeXt as Detectron2's
    ``build_resnet_backbone`` makes them from MODEL.RESNETS (``in_channels`` =
    STEM_OUT_CHANNELS, ``out_channels`` = RES2_OUT_CHANNELS, ``num_groups`` x
    ``width_per_group`` = res2's bottleneck width, doubling per stage), with the stages of
    ``deform_on_per_stage`` made of d2ext's :class:`DeformBottleneckBlock`. Lazy configs use
    it as ``ResNet(stages=L(make_resnet_stages)(...))`` (Detectron2's ``make_default_stages``
    has neither ResNeXt widths nor deformable stages without ``_C``).
    """
    if depth not in BOTTLENECK_BLOCKS_PER_STAGE:
        raise ValueError(
            f"make_resnet_stages builds bottleneck depths {sorted(BOTTLENECK_BLOCKS_PER_STAGE)}, "
            f"got {depth}"
        )
    if len(deform_on_per_stage) != 4:
        raise ValueError(
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE needs 4 entries (res2..res5), got "
            f"{list(deform_on_per_stage)}"
        )
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res5_dilation}")
    if deform_num_groups < 1:
        raise ValueError(f"MODEL.RESNETS.DEFORM_NUM_GROUPS must be >= 1, got {deform_num_groups}")
    bottleneck_channels = num_groups * width_per_group
    stages = []
    for idx, num_blocks in enumerate(BOTTLENECK_BLOCKS_PER_STAGE[depth]):
        dilation = res5_dilation if idx == 3 else 1
        first_stride = 1 if idx == 0 or (idx == 3 and dilation == 2) else 2
        kwargs = dict(
            num_blocks=num_blocks,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1),
            in_channels=in_channels,
            out_channels=out_channels,
            norm=norm,
            bottleneck_channels=bottleneck_channels,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
            num_groups=num_groups,
        )
        if deform_on_per_stage[idx]:
            kwargs.update(
                block_class=DeformBottleneckBlock,
                deform_modulated=deform_modulated,
                deform_num_groups=deform_num_groups,
            )
        else:
            kwargs.update(block_class=BottleneckBlock)
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return stages


def build_d2ext_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    """Detectron2's ``build_resnet_backbone`` for bottleneck depths (50/101/152, ResNeXt by
    NUM_GROUPS / WIDTH_PER_GROUP), with deformable stages on d2ext's DeformConv2d."""
    r = cfg.MODEL.RESNETS
    stem = BasicStem(
        in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM
    )
    stages = make_resnet_stages(
        r.DEPTH,
        in_channels=r.STEM_OUT_CHANNELS,
        out_channels=r.RES2_OUT_CHANNELS,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stride_in_1x1=r.STRIDE_IN_1X1,
        norm=r.NORM,
        res5_dilation=r.RES5_DILATION,
        deform_on_per_stage=r.DEFORM_ON_PER_STAGE,
        deform_modulated=r.DEFORM_MODULATED,
        deform_num_groups=r.DEFORM_NUM_GROUPS,
    )
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


def has_deform_stages(cfg) -> bool:
    return any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE)


__all__ = [
    "DeformBottleneckBlock",
    "DeformConvPack",
    "build_d2ext_resnet",
    "has_deform_stages",
    "make_resnet_stages",
    "split_offset_mask",
]
