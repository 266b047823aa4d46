# The tiny CPU model of the Synthetic/ configs: a half-width GroupNorm ResNet-18 (trained from
# scratch), a 64-channel FPN and 2-conv head towers, for the 5-class synthetic dataset.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from d2ext.modeling.backbone import build_basic_resnet


def shrink_to_tiny(model, num_classes=5):
    """Turns an ATSS-family lazy model (common/models/) into the tiny one, in place."""
    model.backbone.bottom_up = L(build_basic_resnet)(
        depth=18, width=32, stem_width=32, norm="GN", out_features=["res3", "res4", "res5"]
    )
    model.backbone.out_channels = 64
    model.backbone.norm = "GN"
    model.head.input_shape = [ShapeSpec(channels=64)] * 5
    model.head.conv_dims = [64, 64]
    model.num_classes = num_classes
    model.pixel_std = [57.375, 57.120, 58.395]
    return model
