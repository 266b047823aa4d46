# Importing LibraROIHeads registers it in ROI_HEADS_REGISTRY.
from .libra_fast_rcnn import LibraFastRCNNOutputLayers
from .libra_roi_heads import LibraROIHeads

__all__ = ["LibraFastRCNNOutputLayers", "LibraROIHeads"]
