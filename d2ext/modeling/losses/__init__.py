from .balanced_l1 import balanced_l1_loss

__all__ = ["balanced_l1_loss"]
