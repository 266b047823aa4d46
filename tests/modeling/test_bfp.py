"""Balanced feature pyramid (d2ext.modeling.backbone.bfp): shapes, residual form, non-local."""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone

from d2ext.modeling.backbone import BalancedFeaturePyramid, NonLocal2d

STRIDES = (4, 8, 16, 32, 64)


class FixedPyramid(Backbone):
    """A stand-in FPN returning given P2-P6 maps (input ignored)."""

    def __init__(self, features):
        super().__init__()
        self.features = features
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # so gradients have somewhere to go

    def forward(self, x):
        return {k: v + self.anchor for k, v in self.features.items()}

    def output_shape(self):
        return {f"p{i + 2}": ShapeSpec(channels=8, stride=s) for i, s in enumerate(STRIDES)}

    @property
    def size_divisibility(self):
        return 32


class Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def pyramid(size=(64, 96), channels=8, seed=0, values=None):
    g = torch.Generator().manual_seed(seed)
    feats = {}
    for i, s in enumerate(STRIDES):
        shape = (2, channels, -(-size[0] // s), -(-size[1] // s))  # ceil, as P6 of odd sizes
        feats[f"p{i + 2}"] = (
            torch.full(shape, values[i]) if values else torch.randn(shape, generator=g)
        )
    return feats


@pytest.mark.parametrize("refine_type", ["non_local", "conv", "none"])
def test_keeps_every_level_shape(refine_type):
    feats = pyramid(size=(72, 100))  # P5/P6 sizes that do not divide evenly
    bfp = BalancedFeaturePyramid(FixedPyramid(feats), refine_level=2, refine_type=refine_type)
    out = bfp(None)
    assert list(out) == list(feats)
    assert all(out[k].shape == feats[k].shape for k in feats)
    assert bfp.output_shape() == FixedPyramid(feats).output_shape()
    assert bfp.size_divisibility == 32


def test_zero_refinement_is_the_identity():
    # BFP is a residual refinement: if the refined feature is zero, every level is unchanged.
    feats = pyramid()
    bfp = BalancedFeaturePyramid(FixedPyramid(feats), refine_level=2, refine_type="none")
    bfp.refine = Lambda(torch.zeros_like)
    out = bfp(None)
    for k in feats:
        torch.testing.assert_close(out[k], feats[k], rtol=0, atol=0)


def test_integrate_and_scatter_by_hand():
    # Constant levels c_i: gathering keeps constants, the average is mean(c), scattering adds it.
    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    feats = pyramid(values=values)
    for level in (0, 2, 4):
        out = BalancedFeaturePyramid(FixedPyramid(feats), refine_level=level, refine_type="none")(
            None
        )
        for k, c in zip(feats, values):
            torch.testing.assert_close(out[k], torch.full_like(feats[k], c + sum(values) / 5))


def test_gather_pools_finer_and_upsamples_coarser_levels():
    # One hot pixel at P2 survives the max-pool gather; P6's value reaches every P4 cell.
    feats = pyramid(values=[0.0] * 5)
    feats["p2"][:, :, 5, 7] = 5.0  # P4 cell (1, 1) after max-pooling by 4
    feats["p6"][:] = 1.0
    bfp = BalancedFeaturePyramid(FixedPyramid(feats), refine_level=2, refine_type="none")
    captured = {}
    bfp.refine = Lambda(lambda x: captured.setdefault("bsf", x))
    bfp(None)
    bsf = captured["bsf"]
    assert bsf.shape[-2:] == feats["p4"].shape[-2:]
    expected = torch.full_like(bsf, 1.0 / 5)
    expected[:, :, 1, 1] = (5.0 + 1.0) / 5
    torch.testing.assert_close(bsf, expected)


def test_non_local_starts_as_identity_and_matches_its_formula():
    torch.manual_seed(0)
    block = NonLocal2d(6)
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)  # zero-initialised output conv
    torch.nn.init.normal_(block.conv_out.weight, std=0.1)
    theta, phi, g = (conv(x).flatten(2) for conv in (block.theta, block.phi, block.g))  # (N, C, HW)
    attention = torch.softmax(torch.einsum("nci,ncj->nij", theta, phi), dim=-1)  # no 1/sqrt(C)
    y = torch.einsum("nij,ncj->nci", attention, g).reshape(2, 6, 5, 7)
    torch.testing.assert_close(block(x), x + block.conv_out(y))


def test_conv_refine_is_conv_then_relu():
    # METHODS.md Errata 2: refine_type "conv" is mmdet's ConvModule, a 3x3 conv followed by ReLU.
    feats = pyramid()
    bfp = BalancedFeaturePyramid(FixedPyramid(feats), refine_level=2, refine_type="conv")
    x = torch.randn(2, 8, 4, 6, generator=torch.Generator().manual_seed(1))
    conv = torch.nn.functional.conv2d(x, bfp.refine.weight, bfp.refine.bias, padding=1)
    assert (conv < 0).any()  # so the ReLU has something to clip
    refined = bfp.refine(x)
    assert (refined >= 0).all()
    torch.testing.assert_close(refined, conv.clamp(min=0))
    # Through the whole pyramid: every level gains a non-negative residual.
    out = bfp(None)
    assert all((out[k] >= feats[k]).all() for k in feats)


def test_gradients_reach_the_pyramid_and_the_refinement():
    feats = pyramid()
    base = FixedPyramid(feats)
    bfp = BalancedFeaturePyramid(base, refine_level=2, refine_type="non_local")
    sum(v.square().sum() for v in bfp(None).values()).backward()
    assert base.anchor.grad.abs() > 0
    assert bfp.refine.conv_out.weight.grad.abs().sum() > 0


def test_bad_settings_name_the_keys():
    base = FixedPyramid(pyramid())
    with pytest.raises(ValueError, match="MODEL.LIBRA.BFP_REFINE_LEVEL=5"):
        BalancedFeaturePyramid(base, refine_level=5)
    with pytest.raises(ValueError, match="MODEL.LIBRA.BFP_REFINE_TYPE='gcb'"):
        BalancedFeaturePyramid(base, refine_type="gcb")
