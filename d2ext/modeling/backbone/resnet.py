from typing import List

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet, build_resnet_backbone
from torch import nn

from .deformable import build_d2ext_resnet, has_deform_stages

BASIC_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


def build_basic_resnet(
    *,
    depth: int = 18,
    width: int = 64,
    stem_width: int = 64,
    norm: str = "BN",
    out_features: List[str] = ("res3", "res4", "res5"),
    freeze_at: int = 0,
    in_channels: int = 3,
) -> ResNet:
    """
    A ResNet-18/34 (basic blocks) whose res2 has `width` channels (doubling at every stage) and
    whose stem has `stem_width`. Detectron2 builds only width 64; a narrow R18 is what makes
    CPU-sized models train in minutes.
    """
    if depth not in BASIC_BLOCKS_PER_STAGE:
        raise ValueError(
            f"build_basic_resnet builds depths {sorted(BASIC_BLOCKS_PER_STAGE)}, got {depth}"
        )
    stem = BasicStem(in_channels=in_channels, out_channels=stem_width, norm=norm)
    stages = []
    stage_in = stem_width
    for idx, num_blocks in enumerate(BASIC_BLOCKS_PER_STAGE[depth]):
        stage_out = width * 2**idx
        stages.append(
            ResNet.make_stage(
                block_class=BasicBlock,
                num_blocks=num_blocks,
                stride_per_block=[1 if idx == 0 else 2] + [1] * (num_blocks - 1),
                in_channels=stage_in,
                out_channels=stage_out,
                norm=norm,
            )
        )
        stage_in = stage_out
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)


def build_resnet_any_width(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    Detectron2's ResNet from MODEL.RESNETS, except that R18/R34 may also be narrower or wider
    than 64 channels (RES2_OUT_CHANNELS, STEM_OUT_CHANNELS), which Detectron2's builder refuses,
    and that deformable stages (MODEL.RESNETS.DEFORM_ON_PER_STAGE, DEFORM_MODULATED,
    DEFORM_NUM_GROUPS; DCN v1 / modulated v2, ResNeXt too) are built on d2ext's DeformConv2d
    (d2ext/modeling/backbone/deformable.py), not on Detectron2's compiled ops. Other bottleneck
    ResNets / ResNeXts are built by Detectron2 itself.
    """
    depth = cfg.MODEL.RESNETS.DEPTH
    if depth not in BASIC_BLOCKS_PER_STAGE and has_deform_stages(cfg):
        resnet = build_d2ext_resnet(cfg, input_shape)
    elif depth not in BASIC_BLOCKS_PER_STAGE:
        resnet = build_resnet_backbone(cfg, input_shape)
    else:
        if has_deform_stages(cfg):
            raise ValueError(
                f"MODEL.RESNETS.DEFORM_ON_PER_STAGE={list(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE)}: "
                f"deformable stages need a bottleneck ResNet (DEPTH 50/101/152), got DEPTH {depth}"
            )
        resnet = build_basic_resnet(
            depth=depth,
            width=cfg.MODEL.RESNETS.RES2_OUT_CHANNELS,
            stem_width=cfg.MODEL.RESNETS.STEM_OUT_CHANNELS,
            norm=cfg.MODEL.RESNETS.NORM,
            out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
            freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
            in_channels=input_shape.channels,
        )
    if cfg.MODEL.RESNETS.FROZEN_BN_TRAIN_AFFINE:
        if cfg.MODEL.RESNETS.NORM != "FrozenBN":
            raise ValueError(
                "MODEL.RESNETS.FROZEN_BN_TRAIN_AFFINE=True needs MODEL.RESNETS.NORM='FrozenBN', "
                f"got {cfg.MODEL.RESNETS.NORM!r}"
            )
        resnet = train_frozen_bn_affine(resnet, cfg.MODEL.BACKBONE.FREEZE_AT)
    return resnet


def train_frozen_bn_affine(resnet: ResNet, freeze_at: int) -> ResNet:
    """
    Makes the scale and bias of the FrozenBatchNorm2d layers of the stages after ``freeze_at``
    trainable parameters, keeping their statistics fixed: mmdetection's ResNet with
    ``norm_eval=True`` and a BN ``requires_grad=True`` (the torchvision-initialised models of
    its zoo). At test time this is the same function as Detectron2's FrozenBN.
    """
    stages = [resnet.stem] + list(resnet.stages)
    for idx, stage in enumerate(stages, start=1):
        if idx <= freeze_at:
            continue
        for module in stage.modules():
            if isinstance(module, FrozenBatchNorm2d):
                for name in ("weight", "bias"):
                    value = module._buffers.pop(name)
                    setattr(module, name, nn.Parameter(value))
    return resnet
