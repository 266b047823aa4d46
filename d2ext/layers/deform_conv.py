"""torchvision's DeformConv2d run in float32 inside torch.autocast: torchvision's CPU kernel has
no bfloat16 version (and registers no CPU autocast rule), and the sampling offsets lose too much
in half precision. Outside autocast it is torchvision's layer unchanged; the parameters (and so
checkpoints) are the same."""
import torch
from torch import Tensor
from torchvision.ops import DeformConv2d as _TVDeformConv2d

from .precision import autocast_off


class DeformConv2d(_TVDeformConv2d):
    def forward(self, input: Tensor, offset: Tensor, mask: Tensor = None) -> Tensor:
        if not any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda")):
            return super().forward(input, offset, mask)
        with autocast_off():
            return super().forward(input.float(), offset.float(), None if mask is None else mask.float())
