# Import every meta-architecture so it is registered in META_ARCH_REGISTRY.
from .ap_loss_retinanet import APLossRetinaNet
from .atss import ATSS, ATSSHead

__all__ = ["APLossRetinaNet", "ATSS", "ATSSHead"]
