"""torchvision's DeformConv2d run in float32 inside torch.autocast: torchvision's CPU kernel has
no bfloat16 version (and registers no CPU autocast rule), and the sampling offsets lose too much
in half precision. Outside autocast it is torchvision's layer unchanged; the parameters (and so
checkpoints) are the same. Scriptable: TorchScript compiles the plain call (a scripted model
runs without autocast) and skips the autocast branch."""
from typing import Optional

from torch import Tensor
from torchvision.ops import DeformConv2d as _TVDeformConv2d
from torchvision.ops import deform_conv2d

import torch

from .precision import autocast_enabled, autocast_off


class DeformConv2d(_TVDeformConv2d):
    def forward(self, input: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if not torch.jit.is_scripting():  # a branch TorchScript skips (no `and`: it would compile that)
            if autocast_enabled():
                with autocast_off():
                    return self._deform_conv(input.float(), offset.float(), None if mask is None else mask.float())
        return self._deform_conv(input, offset, mask)

    def _deform_conv(self, input: Tensor, offset: Tensor, mask: Optional[Tensor]) -> Tensor:
        # torchvision's DeformConv2d.forward (TorchScript has no super() call).
        return deform_conv2d(
            input, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
            dilation=self.dilation, mask=mask,
        )
