import torch.nn.functional as F
from detectron2.modeling.backbone.fpn import LastLevelP6P7 as _D2LastLevelP6P7


class LastLevelP6P7(_D2LastLevelP6P7):
    """
    Detectron2's P6/P7 block (same parameters, so checkpoints load either way) with the two
    ReLUs the references disagree on (METHODS.md Errata 3) as options:

    - Detectron2, official ATSS / DynamicATSS (maskrcnn-benchmark): P6 = conv(x),
      P7 = conv(relu(P6)): ``relu_before_p6=False, relu_before_p7=True`` (the default).
    - mmdetection's ATSS and GFL, official GFL v1/v2 (``relu_before_extra_convs=False``):
      P7 = conv(P6), no ReLU: ``relu_before_p7=False``.
    - VFNet (``relu_before_extra_convs=True`` with the extra convs on the FPN output): P6 from
      P5 without ReLU, P7 = conv(relu(P6)): the default.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        in_feature="res5",
        *,
        relu_before_p6=False,
        relu_before_p7=True,
    ):
        super().__init__(in_channels, out_channels, in_feature=in_feature)
        self.relu_before_p6 = relu_before_p6
        self.relu_before_p7 = relu_before_p7

    def forward(self, x):
        p6 = self.p6(F.relu(x) if self.relu_before_p6 else x)
        p7 = self.p7(F.relu(p6) if self.relu_before_p7 else p6)
        return [p6, p7]
