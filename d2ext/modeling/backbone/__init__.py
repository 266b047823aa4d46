from .fpn import build_resnet_fpn_p6p7_backbone
from .resnet import build_basic_resnet, build_resnet_any_width

__all__ = ["build_basic_resnet", "build_resnet_any_width", "build_resnet_fpn_p6p7_backbone"]
