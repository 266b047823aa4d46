# Import every meta-architecture so it is registered in META_ARCH_REGISTRY.
from .atss import ATSS, ATSSHead

__all__ = ["ATSS", "ATSSHead"]
