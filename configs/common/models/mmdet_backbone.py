# The backbone of mmdetection's ResNet-50-FPN zoo models (configs/MMDet/), applied to a lazy
# ATSS-family model graph: torchvision-style R-50 (stride in the 3x3 conv, BN in eval mode with
# trainable scale/bias, stem + res2 frozen), FPN P3-P7 with P6 = conv(P5) and images padded to
# 32, RGB input with torchvision's mean/std, anchor centres at x * stride, bias-free tower
# convs, and training on the anchors inside each image's own padding.
from detectron2.config import LazyCall as L

from d2ext.modeling.backbone import FPN, train_frozen_bn_affine


def mmdet_r50_fpn(model, *, relu_before_p6=False, relu_before_p7=False):
    """Sets `model` (a lazy dense detector with a ResNet-FPN backbone) to mmdetection's
    R-50-FPN; the ReLUs before the P6/P7 convs as the source config (METHODS.md Errata 3)."""
    resnet = model.backbone.bottom_up
    resnet.stem.norm = "FrozenBN"
    resnet.stages.depth = 50
    resnet.stages.stride_in_1x1 = False
    resnet.stages.norm = "FrozenBN"
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
