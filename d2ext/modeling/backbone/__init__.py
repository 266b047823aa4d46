from .bfp import BalancedFeaturePyramid, NonLocal2d, build_resnet_fpn_bfp_backbone
from .deformable import (
    DeformBottleneckBlock,
    DeformConvPack,
    build_d2ext_resnet,
    make_resnet_stages,
)
from .fpn import FPN, build_resnet_any_width_fpn_backbone, build_resnet_fpn_p6p7_backbone
from .resnet import build_basic_resnet, build_resnet_any_width, train_frozen_bn_affine
from .top_block import LastLevelP6P7

__all__ = [
    "BalancedFeaturePyramid",
    "DeformBottleneckBlock",
    "DeformConvPack",
    "FPN",
    "LastLevelP6P7",
    "NonLocal2d",
    "build_basic_resnet",
    "build_d2ext_resnet",
    "build_resnet_any_width",
    "build_resnet_any_width_fpn_backbone",
    "build_resnet_fpn_bfp_backbone",
    "build_resnet_fpn_p6p7_backbone",
    "make_resnet_stages",
    "train_frozen_bn_affine",
]
