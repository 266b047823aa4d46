# The backbone of mmdetection's ResNet-FPN zoo models (configs/MMDet/), applied to a lazy
# ATSS-family model graph: torchvision-style ResNet / ResNeXt (stride in the 3x3 conv, BN in eval
# mode with trainable scale/bias, stem + res2 frozen; deformable 3x3 convs in the stages
# mmdetection's `stage_with_dcn` names), FPN P3-P7 with P6 = conv(P5) and images padded to 32,
# RGB input with torchvision's mean/std, anchor centres at x * stride, bias-free tower convs,
# and training on the anchors inside each image's own padding.
from detectron2.config import LazyCall as L

from d2ext.modeling.backbone import FPN, make_resnet_stages, train_frozen_bn_affine

# ImageNet initialisations of mmdetection's configs (torchvision:// and open-mmlab://), converted
# on load (same layout as torchvision's ResNet).
IMAGENET_WEIGHTS = {
    "r50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "r101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
    "x101-32x4d": "https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d-a5af3160.pth",
    "x101-64x4d": "https://download.openmmlab.com/pretrain/third_party/resnext101_64x4d-ee2c6f71.pth",
}


def mmdet_resnet_stages(
    depth=50, groups=1, width_per_group=64, deform_on_per_stage=(False,) * 4, deform_modulated=False
):
    """The res2..res5 stages of mmdetection's ResNet (groups = 1) or ResNeXt (`groups`,
    `base_width` = width_per_group) with style='pytorch', norm_eval=True, and DCN (v1) or DCNv2
    (`deform_modulated`) in the stages of `deform_on_per_stage` (mmdetection's stage_with_dcn)."""
    return L(make_resnet_stages)(
        depth=depth,
        num_groups=groups,
        width_per_group=width_per_group,
        stride_in_1x1=False,
        norm="FrozenBN",
        deform_on_per_stage=list(deform_on_per_stage),
        deform_modulated=deform_modulated,
        deform_num_groups=1,
    )


def mmdet_resnet_fpn(model, *, relu_before_p6=False, relu_before_p7=False, **stages):
    """Sets `model` (a lazy dense detector with a ResNet-FPN backbone) to mmdetection's
    ResNet-FPN (`stages`: mmdet_resnet_stages' arguments; R-50 by default); the ReLUs before the
    P6/P7 convs as the source config (METHODS.md Errata 3)."""
    resnet = model.backbone.bottom_up
    resnet.stem.norm = "FrozenBN"
    resnet.stages = mmdet_resnet_stages(**stages)
    resnet.freeze_at = 2
    model.backbone.bottom_up = L(train_frozen_bn_affine)(resnet=resnet, freeze_at=2)
    model.backbone._target_ = FPN
    model.backbone.size_divisibility = 32
    model.backbone.top_block.in_feature = "p5"
    model.backbone.top_block.in_channels = "${..out_channels}"
    model.backbone.top_block.relu_before_p6 = relu_before_p6
    model.backbone.top_block.relu_before_p7 = relu_before_p7
    model.anchor_generator.offset = 0.0
    model.pixel_mean = [123.675, 116.28, 103.53]
    model.pixel_std = [58.395, 57.12, 57.375]
    model.input_format = "RGB"
    model.head.tower_conv_bias = False
    # Training ignores the anchors beyond each image's own size padded to 32 (valid_flags).
    model.valid_anchors_pad_divisor = 32
    return model


def mmdet_r50_fpn(model, *, relu_before_p6=False, relu_before_p7=False):
    """mmdet_resnet_fpn with mmdetection's R-50."""
    return mmdet_resnet_fpn(model, relu_before_p6=relu_before_p6, relu_before_p7=relu_before_p7)


def set_resnet_stages(model, **stages):
    """Replaces the stages of a lazy model built by mmdet_resnet_fpn (dense detectors) or of
    configs/MMDet/libra-faster-rcnn_r50_fpn_1x_coco.py (BFP over FPN) by mmdet_resnet_stages."""
    backbone = model.backbone.fpn if "fpn" in model.backbone else model.backbone
    backbone.bottom_up.resnet.stages = mmdet_resnet_stages(**stages)
    return model
