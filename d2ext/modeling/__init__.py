# Importing these modules registers their classes with Detectron2's registries.
from .assigners import atss_assign
from .backbone import build_resnet_fpn_p6p7_backbone
from .meta_arch import ATSS, GFL, ATSSHead, DynamicATSS, GFLHead

__all__ = ["ATSS", "ATSSHead", "DynamicATSS", "GFL", "GFLHead", "atss_assign", "build_resnet_fpn_p6p7_backbone"]
