from .atss import atss_assign

__all__ = ["atss_assign"]
