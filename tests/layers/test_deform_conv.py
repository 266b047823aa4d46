"""d2ext's DeformConv2d: the CPU path (grid_sample + matmul) against torchvision's deform_conv2d,
which stays the oracle (and the op on CUDA and in traced / scripted / exported models)."""

import pytest
import torch
from torchvision.ops import deform_conv2d

from d2ext.layers.deform_conv import DeformConv2d, sampled_deform_conv2d


def inputs(
    n=2,
    c=3,
    h=7,
    w=9,
    c_out=4,
    k=(3, 3),
    stride=1,
    padding=1,
    dilation=1,
    scale=3.0,
    seed=0,
    dtype=torch.float64,
):
    g = torch.Generator().manual_seed(seed)
    (sh, sw), (ph, pw), (dh, dw) = [
        (v, v) if isinstance(v, int) else v for v in (stride, padding, dilation)
    ]
    h_out = (h + 2 * ph - dh * (k[0] - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (k[1] - 1) - 1) // sw + 1
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    # Offsets up to a few pixels: many points fall between pixels, some outside the image.
    offset = torch.randn(n, 2 * k[0] * k[1], h_out, w_out, generator=g, dtype=dtype) * scale
    weight = torch.randn(c_out, c, *k, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    mask = torch.rand(n, k[0] * k[1], h_out, w_out, generator=g, dtype=dtype)
    return x, offset, weight, bias, mask


def both(x, offset, weight, bias=None, mask=None, **kw):
    """(torchvision, sampled) outputs and the gradients of a fixed random projection of them."""
    results = []
    for fn in (deform_conv2d, sampled_deform_conv2d):
        args = [
            t.detach().clone().requires_grad_() if t is not None else None
            for t in (x, offset, weight, bias, mask)
        ]
        out = fn(args[0], args[1], args[2], args[3], mask=args[4], **kw)
        proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        grads = torch.autograd.grad((out * proj).sum(), [a for a in args if a is not None])
        results.append((out, grads))
    return results


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(stride=2),
        dict(stride=(1, 2), padding=(0, 2), dilation=(2, 1)),
        dict(k=(1, 3), padding=0),
        dict(k=(5, 5), padding=2, scale=10.0),  # most samples outside the image
        dict(h=1, w=1, padding=1),  # one-pixel image
    ],
)
@pytest.mark.parametrize("with_mask", [False, True])
def test_sampled_equals_torchvision_values_and_gradients(kw, with_mask):
    kw = dict(kw)
    conv = {key: kw[key] for key in ("stride", "padding", "dilation") if key in kw}
    conv.setdefault("padding", 1)
    x, offset, weight, bias, mask = inputs(**kw)
    (tv_out, tv_grads), (out, grads) = both(
        x, offset, weight, bias, mask if with_mask else None, **conv
    )
    torch.testing.assert_close(out, tv_out, rtol=1e-10, atol=1e-10)
    for name, g, tv_g in zip(("input", "offset", "weight", "bias", "mask"), grads, tv_grads):
        torch.testing.assert_close(
            g, tv_g, rtol=1e-9, atol=1e-9, msg=lambda m: f"{name} gradient: {m}"
        )


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-2)]
)  # float32: the nudge
@pytest.mark.parametrize("hw", [(3, 5), (7, 9), (36, 60), (5, 333)])
def test_whole_pixel_positions_take_torchvisions_one_sided_offset_gradient(dtype, tol, hw):
    """Zero offsets (a DCN's initialisation) sample whole pixels, where bilinear sampling has a
    kink: the offset gradient must be torchvision's (the cell right of / below the pixel) for
    every point, not the left one that grid_sample's coordinate round trip would give ~10% of
    them (up to 30 apart on gradients of ~20, before the nudge)."""
    x, offset, weight, bias, _ = inputs(n=1, c=2, h=hw[0], w=hw[1], c_out=3, dtype=dtype)
    offset = torch.zeros_like(offset)
    offset[:, 0::2] = 2.0  # whole pixels away from the regular grid too
    (tv_out, tv_grads), (out, grads) = both(x, offset, weight, bias, padding=1)
    torch.testing.assert_close(out, tv_out, rtol=tol, atol=tol)
    for g, tv_g in zip(grads, tv_grads):
        torch.testing.assert_close(g, tv_g, rtol=tol, atol=tol)


def test_inference_samples_where_asked(monkeypatch):
    """The whole-pixel nudge is for the offset gradient only: without one, nothing is moved (the
    mmdetection VFNet parity compares inference scores to 1e-6)."""
    import d2ext.layers.deform_conv as module

    moved = []
    real = module._whole_pixels_right
    monkeypatch.setattr(
        module, "_whole_pixels_right", lambda p, size: moved.append(1) or real(p, size)
    )
    x, offset, weight, bias, _ = inputs()
    with torch.no_grad():
        sampled_deform_conv2d(x, offset.requires_grad_(), weight, bias, padding=1)
    sampled_deform_conv2d(x, offset.detach(), weight, bias, padding=1)
    assert moved == []
    sampled_deform_conv2d(x, offset.requires_grad_(), weight, bias, padding=1)
    assert moved == [1, 1]


def test_integer_offsets_are_a_shifted_convolution():
    """Offsets of whole pixels sample pixels exactly: a (+1, -2) shift of every kernel point is
    a plain convolution of the image shifted by one row down and two columns left."""
    x, _, weight, bias, _ = inputs(h=8, w=10)
    offset = torch.zeros(2, 18, 8, 10, dtype=x.dtype)
    offset[:, 0::2], offset[:, 1::2] = 1.0, -2.0
    # Output (y, x), kernel point (i, j) samples x[y + i, x + j - 3] (padding 1, offset (+1, -2)).
    padded = torch.nn.functional.pad(
        x, (3, 3, 2, 2)
    )  # padded[r, c] = x[r - 2, c - 3], zeros outside
    shifted = padded[:, :, 2 : 2 + 8 + 2, 0 : 10 + 2]  # shifted[r, c] = x[r, c - 3]
    expected = torch.nn.functional.conv2d(shifted, weight, bias)
    torch.testing.assert_close(sampled_deform_conv2d(x, offset, weight, bias, padding=1), expected)


def test_gradcheck_float64():
    x, offset, weight, bias, mask = inputs(n=1, c=2, h=4, w=5, c_out=2)
    offset = offset * 0.5 + 0.3  # away from whole pixels, where bilinear sampling has kinks
    args = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    assert torch.autograd.gradcheck(
        lambda a, o, w, b, m: sampled_deform_conv2d(a, o, w, b, padding=1, mask=m), args
    )


def test_float32_matches_torchvision():
    x, offset, weight, bias, _ = inputs(n=2, c=16, h=12, w=20, c_out=8, dtype=torch.float32)
    (tv_out, tv_grads), (out, grads) = both(x, offset, weight, bias, padding=1)
    torch.testing.assert_close(out, tv_out, rtol=1e-4, atol=1e-4)
    for g, tv_g in zip(grads, tv_grads):
        torch.testing.assert_close(g, tv_g, rtol=1e-4, atol=1e-3)


def test_bad_shapes_are_named():
    x, offset, weight, _, _ = inputs()
    with pytest.raises(ValueError, match=r"offset shape \(2, 18, 7, 8\): expected \(2, 18, 7, 9\)"):
        sampled_deform_conv2d(x, offset[..., :8], weight, padding=1)
    with pytest.raises(ValueError, match="one weight and one offset group"):
        sampled_deform_conv2d(x, torch.cat([offset, offset], 1), weight, padding=1)
    mask = torch.ones(2, 9, 9, 7, dtype=x.dtype)  # H and W swapped: as many elements
    with pytest.raises(ValueError, match=r"mask shape \(2, 9, 9, 7\): expected \(2, 9, 7, 9\)"):
        sampled_deform_conv2d(x, offset, weight, padding=1, mask=mask)


def test_strided_mask_and_offsets_and_empty_batch():
    x, offset, weight, bias, mask = inputs()
    wide_mask = torch.cat([mask, mask], dim=-1)[..., ::2]  # not contiguous
    wide_offset = torch.cat([offset, offset], dim=-1)[..., ::2]
    expected = deform_conv2d(x, wide_offset, weight, bias, padding=1, mask=wide_mask)
    torch.testing.assert_close(
        sampled_deform_conv2d(x, wide_offset, weight, bias, padding=1, mask=wide_mask), expected
    )
    out = sampled_deform_conv2d(x[:0], offset[:0], weight, bias, padding=1)
    assert out.shape == (0, 4, 7, 9)


def test_layer_under_cpu_autocast_runs_float32():
    torch.manual_seed(0)
    layer = DeformConv2d(4, 4, 3, padding=1)
    x, offset = torch.randn(1, 4, 5, 6), torch.randn(1, 18, 5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x.bfloat16(), offset.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, layer(x.bfloat16().float(), offset.bfloat16().float()))
