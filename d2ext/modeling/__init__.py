# Importing these modules registers their classes with Detectron2's registries.
from .assigners import atss_assign
from .backbone import build_resnet_fpn_p6p7_backbone
from .meta_arch import APLossRetinaNet, ATSS, ATSSHead

__all__ = ["APLossRetinaNet", "ATSS", "ATSSHead", "atss_assign", "build_resnet_fpn_p6p7_backbone"]
