"""Every d2ext op on a device (cuda, marked; "cpu" checks this harness itself) against the CPU
kernel and the reference: values and the gradient of its differentiable input, with float32 and
float16 / bfloat16 inputs (computed in float32); and called through torch.ops.d2ext under
torch.autocast (d2ext.layers._autocast): float32 out, equal to the float32 call."""

import pytest
import torch
from conftest import CUDA

from d2ext import layers
from d2ext.layers import has_ops, reference

requires_ops = pytest.mark.skipif(not has_ops(), reason="d2ext._C is not built")
LOW = {"cpu": torch.bfloat16, "cuda": torch.float16}


def _boxes(n, seed, scale=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * scale / 3 + 1], dim=1)


def _inputs():
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(8.0) * 16, torch.arange(8.0) * 16, indexing="ij")
    centers = torch.stack([xs.flatten(), ys.flatten()], 1)
    anchors = torch.cat(
        [
            torch.cat([centers - 16, centers + 16], 1),
            torch.cat([centers[::4] - 32, centers[::4] + 32], 1),
        ]
    )
    return {
        "b1": _boxes(30, 1),
        "b2": _boxes(30, 2),
        "gt": _boxes(7, 3),
        "anchors": anchors,
        "pred": anchors + torch.randn(anchors.shape, generator=g) * 3,
        "logits": torch.randn(40, 6, generator=g) * 3,
        "labels": torch.randint(-1, 7, (40,), generator=g),
        "scores": torch.rand(40, generator=g),
        "weight": torch.rand(40, generator=g),
        "bins": torch.randn(40, 9, generator=g),
        "target": torch.rand(40, generator=g) * 7.9,
    }


LEVELS = [64, 16]
# name -> (fn(impl, x) -> output(s), the input its gradient is checked for, or None)
OPS = {
    "pairwise_iou": (lambda m, x: m.pairwise_iou(x["b1"], x["gt"], "giou"), None),
    "aligned_iou": (lambda m, x: m.aligned_iou(x["b1"], x["b2"], "giou"), None),
    "combined_iou": (lambda m, x: m.combined_iou(x["anchors"], x["pred"], x["gt"], 1.0, 1.0), None),
    "giou_loss": (lambda m, x: m.giou_loss(x["b1"], x["b2"], x["weight"][:30], "sum"), "b1"),
    "atss_assign": (lambda m, x: m.atss_assign(x["anchors"], LEVELS, x["gt"], 9), None),
    "dynamic_atss_assign": (
        lambda m, x: m.atss_assign(x["anchors"], LEVELS, x["gt"], 9, x["pred"], 1.0, 1.0),
        None,
    ),
    "sigmoid_focal_loss": (
        lambda m, x: m.sigmoid_focal_loss(x["logits"], x["labels"], 0.25, 2.0, x["weight"], "sum"),
        "logits",
    ),
    "quality_focal_loss": (
        lambda m, x: m.quality_focal_loss(
            x["logits"], x["labels"], x["scores"], 2.0, x["weight"], "sum"
        ),
        "logits",
    ),
    "varifocal_loss": (
        lambda m, x: m.varifocal_loss(
            x["logits"], x["labels"], x["scores"], 0.75, 2.0, True, x["weight"], "sum"
        ),
        "logits",
    ),
    "distribution_focal_loss": (
        lambda m, x: m.distribution_focal_loss(x["bins"], x["target"], x["weight"], "sum"),
        "bins",
    ),
    "ap_loss": (lambda m, x: m.ap_loss(x["logits"], x["labels"]), "logits"),
}


def _run(name, impl, x, grad_of):
    x = {
        k: v.detach().requires_grad_(k == grad_of) if v.is_floating_point() else v
        for k, v in x.items()
    }
    out = OPS[name][0](impl, x)
    if name == "ap_loss" and impl is reference:
        return tuple(
            t.detach() for t in out
        )  # (loss, the error-driven update = the logits' gradient)
    outs = out if isinstance(out, tuple) else (out,)
    if grad_of is not None:
        outs = outs + torch.autograd.grad(outs[0].sum(), x[grad_of])
    return outs


def _close(actual, expected, rtol, atol):
    for a, e in zip(actual, expected):
        assert (
            a.dtype == e.dtype
            or a.dtype in (torch.float16, torch.bfloat16)
            or e.dtype == torch.float32
        )
        torch.testing.assert_close(a.cpu().to(e.dtype), e, rtol=rtol, atol=atol, equal_nan=True)


@requires_ops
@pytest.mark.parametrize("low_precision", [False, True])
@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_on_device_matches_cpu_kernel_and_reference(name, device, low_precision):
    x = _inputs()
    grad_of = OPS[name][1]
    if low_precision:  # the float32 results of the rounded inputs are what the ops must give
        x = {k: v.to(LOW[device]).float() if v.is_floating_point() else v for k, v in x.items()}
    cpu_kernel = _run(name, layers, x, grad_of)
    ref = _run(name, reference, x, grad_of)
    on_device = {k: v.to(device) for k, v in x.items()}
    if low_precision:
        on_device = {
            k: v.to(LOW[device]) if v.is_floating_point() else v for k, v in on_device.items()
        }
    device_kernel = _run(name, layers, on_device, grad_of)
    # Gradients of a half / bfloat16 input come back in its dtype (rounded).
    tol = (1e-2, 1e-2) if low_precision else (1e-4, 1e-5)
    _close(device_kernel, cpu_kernel, *tol)
    _close(device_kernel, ref, *(tol if low_precision else (1e-4, 1e-4)))


AUTOCAST_CALLS = {
    "pairwise_iou": lambda x: torch.ops.d2ext.pairwise_iou(x["b1"], x["gt"], 1),
    "aligned_iou": lambda x: torch.ops.d2ext.aligned_iou(x["b1"], x["b2"], 1),
    "combined_iou": lambda x: torch.ops.d2ext.combined_iou(
        x["anchors"], x["pred"], x["gt"], 1.0, 1.0
    ),
    "giou_loss": lambda x: torch.ops.d2ext.giou_loss(x["b1"], x["b2"], x["weight"][:30], 1),
    "atss_assign": lambda x: torch.ops.d2ext.atss_assign(
        x["anchors"], LEVELS, x["gt"], 9, x["pred"], 1.0, 1.0
    ),
    "sigmoid_focal_loss": lambda x: torch.ops.d2ext.sigmoid_focal_loss(
        x["logits"], x["labels"], x["weight"], 0.25, 2.0, 1
    ),
    "quality_focal_loss": lambda x: torch.ops.d2ext.quality_focal_loss(
        x["logits"], x["labels"], x["scores"], x["weight"], 2.0, 1
    ),
    "varifocal_loss": lambda x: torch.ops.d2ext.varifocal_loss(
        x["logits"], x["labels"], x["scores"], x["weight"], 0.75, 2.0, True, 1
    ),
    "distribution_focal_loss": lambda x: torch.ops.d2ext.distribution_focal_loss(
        x["bins"], x["target"], x["weight"], 1
    ),
    "ap_loss": lambda x: torch.ops.d2ext.ap_loss(x["logits"], x["labels"].clamp(min=0), 1.0, True),
}


@requires_ops
@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("name", sorted(AUTOCAST_CALLS))
def test_ops_compute_in_float32_under_autocast(name, device):
    x = {k: v.to(device) for k, v in _inputs().items()}
    # Half-precision inputs mixed with float32 ones (the anchors, GT boxes): the kernels alone
    # would refuse the mix or compute in half precision.
    low = {
        k: v.to(LOW[device]) if k in ("b1", "pred", "logits", "bins", "scores") else v
        for k, v in x.items()
    }
    expected = AUTOCAST_CALLS[name](
        {k: v.float() if v.is_floating_point() else v for k, v in low.items()}
    )
    with torch.autocast(device, dtype=LOW[device]):
        out = AUTOCAST_CALLS[name](low)
    for o, e in zip(*(t if isinstance(t, tuple) else (t,) for t in (out, expected))):
        assert o.dtype == e.dtype, (o.dtype, e.dtype)
        torch.testing.assert_close(o, e, equal_nan=True)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_deform_conv_runs_in_float32_under_autocast(device):
    from torchvision.ops import DeformConv2d as TorchvisionDeformConv2d

    from d2ext.layers.deform_conv import DeformConv2d

    torch.manual_seed(0)
    conv = DeformConv2d(4, 4, kernel_size=3, padding=1, bias=False).to(device)
    x, offsets = torch.randn(1, 4, 6, 6, device=device), torch.randn(1, 18, 6, 6, device=device)
    expected = conv(x, offsets)
    with torch.autocast(device, dtype=LOW[device]):
        out = conv(x.to(LOW[device]), offsets)
    assert out.dtype == torch.float32
    torch.testing.assert_close(
        out, TorchvisionDeformConv2d.forward(conv, x.to(LOW[device]).float(), offsets)
    )
    torch.testing.assert_close(out, expected, rtol=0.05, atol=0.05)
