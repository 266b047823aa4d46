from .bfp import BalancedFeaturePyramid, NonLocal2d, build_resnet_fpn_bfp_backbone
from .fpn import build_resnet_any_width_fpn_backbone, build_resnet_fpn_p6p7_backbone
from .resnet import build_basic_resnet, build_resnet_any_width

__all__ = [
    "BalancedFeaturePyramid",
    "NonLocal2d",
    "build_basic_resnet",
    "build_resnet_any_width",
    "build_resnet_any_width_fpn_backbone",
    "build_resnet_fpn_bfp_backbone",
    "build_resnet_fpn_p6p7_backbone",
]
