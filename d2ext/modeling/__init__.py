# Importing these modules registers their classes with Detectron2's registries.
from .assigners import atss_assign
from .backbone import (
    BalancedFeaturePyramid,
    build_resnet_any_width_fpn_backbone,
    build_resnet_fpn_bfp_backbone,
    build_resnet_fpn_p6p7_backbone,
)
from .meta_arch import ATSS, GFL, APLossRetinaNet, ATSSHead, DynamicATSS, GFLHead
from .proposal_generator import LibraRPN
from .roi_heads import LibraFastRCNNOutputLayers, LibraROIHeads
from .test_time_augmentation import DetectorWithTTA, build_tta_mapper, wrap_predictor_with_tta

__all__ = [
    "APLossRetinaNet",
    "ATSS",
    "ATSSHead",
    "BalancedFeaturePyramid",
    "DetectorWithTTA",
    "DynamicATSS",
    "GFL",
    "GFLHead",
    "LibraFastRCNNOutputLayers",
    "LibraROIHeads",
    "LibraRPN",
    "atss_assign",
    "build_resnet_any_width_fpn_backbone",
    "build_resnet_fpn_bfp_backbone",
    "build_resnet_fpn_p6p7_backbone",
    "build_tta_mapper",
    "wrap_predictor_with_tta",
]
