# Import every meta-architecture so it is registered in META_ARCH_REGISTRY.
from .ap_loss_retinanet import APLossRetinaNet
from .atss import ATSS, ATSSHead
from .atss_base import ATSSBase
from .dynamic_atss import DynamicATSS
from .gfl import GFL
from .gfl_head import DGQP, GFLHead
from .libra_retinanet import LibraRetinaNet
from .musu import MuSu, MuSuHead
from .vfnet import VFNet
from .vfnet_head import VFNetHead

__all__ = [
    "APLossRetinaNet",
    "ATSS",
    "ATSSBase",
    "ATSSHead",
    "DGQP",
    "DynamicATSS",
    "GFL",
    "GFLHead",
    "LibraRetinaNet",
    "MuSu",
    "MuSuHead",
    "VFNet",
    "VFNetHead",
]
