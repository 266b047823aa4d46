from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling import FPN as _D2FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .resnet import build_resnet_any_width
from .top_block import LastLevelP6P7


class FPN(_D2FPN):
    """
    Detectron2's FPN whose input padding can be set: Detectron2 pads images to a multiple of
    the coarsest level's stride (128 with P7); mmdetection pads to 32 whatever the levels.
    Padding changes the features near the bottom/right border (the padded zeros go through
    the convs and BNs), so a converted mmdetection model needs its 32 (``size_divisibility``).
    """

    def __init__(self, *args, size_divisibility: int = 0, **kwargs):
        """
        Args:
            size_divisibility (int): pad inputs to a multiple of this; 0 = Detectron2's default
                (the coarsest output stride).
        """
        super().__init__(*args, **kwargs)
        if size_divisibility < 0:
            raise ValueError(f"MODEL.FPN.SIZE_DIVISIBILITY must be >= 0, got {size_divisibility}")
        if size_divisibility:
            self._size_divisibility = size_divisibility


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_p6p7_backbone(cfg, input_shape: ShapeSpec):
    """
    ResNet (R18/R34 of any width, see build_resnet_any_width) + FPN, with P6/P7 computed from
    the feature named by MODEL.FPN.TOP_LEVELS_IN_FEATURE: "p5" for the ATSS family
    (METHODS.md §0), "res5" for Detectron2's RetinaNet, and a ReLU before the P6 and P7 convs
    where MODEL.FPN.RELU_BEFORE_P6 / RELU_BEFORE_P7 ask for it (METHODS.md Errata 3).
    """
    bottom_up = build_resnet_any_width(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    in_feature = cfg.MODEL.FPN.TOP_LEVELS_IN_FEATURE
    if in_feature == "p5":
        top_in_channels = out_channels
    elif in_feature in bottom_up.output_shape():
        top_in_channels = bottom_up.output_shape()[in_feature].channels
    else:
        raise ValueError(
            f"MODEL.FPN.TOP_LEVELS_IN_FEATURE={in_feature!r} is neither 'p5' nor a backbone "
            f"output ({sorted(bottom_up.output_shape())})"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(
            top_in_channels,
            out_channels,
            in_feature=in_feature,
            relu_before_p6=cfg.MODEL.FPN.RELU_BEFORE_P6,
            relu_before_p7=cfg.MODEL.FPN.RELU_BEFORE_P7,
        ),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        size_divisibility=cfg.MODEL.FPN.SIZE_DIVISIBILITY,
    )


@BACKBONE_REGISTRY.register()
def build_resnet_any_width_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    Detectron2's build_resnet_fpn_backbone (FPN with P6 = max-pool of P5, as Faster R-CNN uses),
    whose ResNet may also be a narrow R18/R34 (build_resnet_any_width).
    """
    bottom_up = build_resnet_any_width(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        size_divisibility=cfg.MODEL.FPN.SIZE_DIVISIBILITY,
    )
