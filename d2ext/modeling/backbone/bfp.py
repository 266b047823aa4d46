"""
Balanced feature pyramid (Libra R-CNN, Pang et al., CVPR 2019, §3.2; METHODS.md §7.3): every FPN
level is resized to one refine level and averaged, the average is refined (embedded-Gaussian
non-local block, or a 3x3 conv + ReLU), then resized back and added to each level.
"""

from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn

REFINE_TYPES = ("non_local", "conv", "none")


class NonLocal2d(nn.Module):
    """
    Embedded-Gaussian non-local block (Wang et al., CVPR 2018) as Libra R-CNN's BFP uses it:
    theta, phi, g are 1x1 convs with C channels (reduction 1), attention softmax(theta^T phi)
    without 1/sqrt(C) scaling, and a zero-initialised 1x1 output conv added to the input, so the
    block starts as the identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.theta = Conv2d(channels, channels, kernel_size=1)
        self.phi = Conv2d(channels, channels, kernel_size=1)
        self.g = Conv2d(channels, channels, kernel_size=1)
        self.conv_out = Conv2d(channels, channels, kernel_size=1)
        for conv in (self.theta, self.phi, self.g):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).view(n, c, h * w).transpose(1, 2)  # (N, HW, C)
        phi = self.phi(x).view(n, c, h * w)  # (N, C, HW)
        g = self.g(x).view(n, c, h * w).transpose(1, 2)  # (N, HW, C)
        attention = torch.softmax(torch.bmm(theta, phi), dim=-1)  # (N, HW, HW)
        y = torch.bmm(attention, g).transpose(1, 2).reshape(n, c, h, w)
        return x + self.conv_out(y)


class BalancedFeaturePyramid(Backbone):
    """
    Wraps an FPN backbone (any Backbone whose outputs have equal channels and strides doubling
    from level to level, e.g. Detectron2's FPN) and returns the same features, each plus the
    refined balanced semantic feature::

        gather:    finer levels -> adaptive max-pool, coarser -> nearest upsampling, to the size
                   of level `refine_level` (index into the outputs, finest first)
        integrate: plain average over levels
        refine:    NonLocal2d ("non_local"), 3x3 conv + ReLU ("conv", mmdet's ConvModule) or
                   nothing ("none")
        scatter:   back to every level (finer: nearest upsampling, coarser: adaptive max-pool),
                   added to the level (residual)
    """

    def __init__(self, fpn: Backbone, refine_level: int = 2, refine_type: str = "non_local"):
        super().__init__()
        shapes = fpn.output_shape()
        self.fpn = fpn
        self.level_names = sorted(shapes, key=lambda name: shapes[name].stride)
        if not 0 <= refine_level < len(self.level_names):
            raise ValueError(
                f"MODEL.LIBRA.BFP_REFINE_LEVEL={refine_level} is not an index into the "
                f"{len(self.level_names)} levels {self.level_names}"
            )
        channels = {shapes[name].channels for name in self.level_names}
        if len(channels) != 1:
            raise ValueError(f"BFP needs levels of equal channels, got {channels}")
        (channels,) = channels
        self.refine_level = refine_level
        self.refine_type = refine_type
        if refine_type == "non_local":
            self.refine = NonLocal2d(channels)
        elif refine_type == "conv":
            # mmdet's BFP builds a ConvModule, whose default act_cfg adds a ReLU after the conv.
            self.refine = Conv2d(channels, channels, kernel_size=3, padding=1, activation=F.relu)
            nn.init.xavier_uniform_(self.refine.weight)
            nn.init.zeros_(self.refine.bias)
        elif refine_type == "none":
            self.refine = nn.Identity()
        else:
            raise ValueError(
                f"MODEL.LIBRA.BFP_REFINE_TYPE={refine_type!r} is not one of {REFINE_TYPES}"
            )

    @property
    def size_divisibility(self):
        return self.fpn.size_divisibility

    @property
    def padding_constraints(self):
        return self.fpn.padding_constraints

    @property
    def top_block(self):
        """The wrapped FPN's extra levels (e.g. P6/P7 of Libra RetinaNet), None if it has none."""
        return getattr(self.fpn, "top_block", None)

    def output_shape(self):
        return self.fpn.output_shape()

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        features = self.fpn(x)
        levels = [features[name] for name in self.level_names]
        size = levels[self.refine_level].shape[-2:]
        gathered: List[Tensor] = []
        for i, f in enumerate(levels):
            if i < self.refine_level:
                gathered.append(_adaptive_max_pool2d(f, size, 1 << (self.refine_level - i)))
            else:
                gathered.append(F.interpolate(f, size=size, mode="nearest"))
        total = gathered[0]  # sum(gathered), which TorchScript has no builtin for
        for f in gathered[1:]:
            total = total + f
        balanced = self.refine(total / len(gathered))
        # Outputs other than the pyramid's levels (none for FPN) pass through, in their order.
        out: Dict[str, Tensor] = {}
        for name, f in features.items():
            out[name] = f
        for i, (name, f) in enumerate(zip(self.level_names, levels)):
            if i < self.refine_level:
                residual = F.interpolate(balanced, size=f.shape[-2:], mode="nearest")
            else:
                residual = _adaptive_max_pool2d(
                    balanced, f.shape[-2:], 1 << (i - self.refine_level)
                )
            out[name] = f + residual
        return out


def _adaptive_max_pool2d(x: Tensor, size: List[int], ratio: int) -> Tensor:
    """F.adaptive_max_pool2d(x, size) for a size about 1/ratio of x's. While tracing, the same
    maxima from gathers, because ONNX has no adaptive pooling to a size known only at run time
    (the exported graph must follow every image size)."""
    if not torch.jit.is_tracing():
        return F.adaptive_max_pool2d(x, size)
    # Adaptive pooling's window i is [floor(i * in / out), ceil((i + 1) * in / out)), at most
    # ratio + 2 long: the max of that many shifted gathers, each clamped to the window's last
    # element; row windows, then column windows (max pooling is separable).
    for dim, out in ((2, size[0]), (3, size[1])):
        length = x.shape[dim]
        i = torch.arange(out, device=x.device)
        start = torch.div(i * length, out, rounding_mode="floor")
        end = torch.div((i + 1) * length + out - 1, out, rounding_mode="floor")
        pooled = x.index_select(dim, start)
        for k in range(1, ratio + 2):
            pooled = torch.maximum(pooled, x.index_select(dim, torch.minimum(start + k, end - 1)))
        x = pooled
    return x


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_bfp_backbone(cfg, input_shape: ShapeSpec):
    """
    The FPN backbone named by MODEL.LIBRA.BFP_BASE_BACKBONE, wrapped in a balanced feature
    pyramid (MODEL.LIBRA.BFP_REFINE_LEVEL / BFP_REFINE_TYPE).
    """
    name = cfg.MODEL.LIBRA.BFP_BASE_BACKBONE
    if name == "build_resnet_fpn_bfp_backbone":
        raise ValueError("MODEL.LIBRA.BFP_BASE_BACKBONE must name the FPN to wrap, not BFP itself")
    fpn = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    return BalancedFeaturePyramid(
        fpn,
        refine_level=cfg.MODEL.LIBRA.BFP_REFINE_LEVEL,
        refine_type=cfg.MODEL.LIBRA.BFP_REFINE_TYPE,
    )
