from .bfp import BalancedFeaturePyramid, NonLocal2d, build_resnet_fpn_bfp_backbone
from .fpn import FPN, build_resnet_any_width_fpn_backbone, build_resnet_fpn_p6p7_backbone
from .resnet import build_basic_resnet, build_resnet_any_width, train_frozen_bn_affine
from .top_block import LastLevelP6P7

__all__ = [
    "BalancedFeaturePyramid",
    "FPN",
    "LastLevelP6P7",
    "NonLocal2d",
    "build_basic_resnet",
    "build_resnet_any_width",
    "build_resnet_any_width_fpn_backbone",
    "build_resnet_fpn_bfp_backbone",
    "build_resnet_fpn_p6p7_backbone",
    "train_frozen_bn_affine",
]
