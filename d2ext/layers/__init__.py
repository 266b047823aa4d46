"""d2ext's ops. Each runs a compiled kernel (d2ext._C) or, if that is not built, its reference
in :mod:`d2ext.layers.reference` after one warning."""
from ._extension import has_ops
from .iou import pairwise_iou

__all__ = ["has_ops", "pairwise_iou"]
