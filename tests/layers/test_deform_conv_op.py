"""torch.ops.d2ext.deform_conv2d (d2ext.layers.deform_conv2d, and DeformConv2d on the CPU):
values and input / offset / weight / mask / bias gradients against torchvision's deform_conv2d,
the oracle, in float64; chunking, the fake kernel, torch.compile, the CPU variants, the layer's
choice of path and the fallback without the compiled ops."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import DEVICES, REPO_ROOT
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from d2ext.layers import DeformConv2d, deform_conv2d, has_ops

requires_ops = pytest.mark.skipif(not has_ops(), reason="d2ext._C is not built")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def inputs(
    n=3,
    c=4,
    h=7,
    w=9,
    c_out=6,
    k=(3, 3),
    stride=1,
    padding=1,
    dilation=1,
    groups=1,
    offset_groups=1,
    scale=3.0,
    seed=0,
    dtype=torch.float64,
    device="cpu",
):
    g = torch.Generator().manual_seed(seed)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    h_out = (h + 2 * ph - dh * (k[0] - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (k[1] - 1) - 1) // sw + 1
    taps = k[0] * k[1]
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    # Offsets of a few pixels: most points between pixels, some (or, with a large scale, most)
    # outside the image.
    offset = (
        torch.randn(n, 2 * offset_groups * taps, h_out, w_out, generator=g, dtype=dtype) * scale
    )
    weight = torch.randn(c_out, c // groups, *k, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    mask = torch.rand(n, offset_groups * taps, h_out, w_out, generator=g, dtype=dtype)
    return [t.to(device) for t in (x, offset, weight, bias, mask)]


def values_and_grads(fn, x, offset, weight, bias, mask, **conv):
    """fn's output and the gradients of a fixed random projection of it, for every input given."""
    args = [
        t.detach().clone().requires_grad_() if t is not None else None
        for t in (x, offset, weight, bias, mask)
    ]
    out = fn(args[0], args[1], args[2], args[3], mask=args[4], **conv)
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype).to(
        out.device
    )
    leaves = [a for a in args if a is not None]
    return out, torch.autograd.grad((out * proj).sum(), leaves)


NAMES = ("input", "offset", "weight", "bias", "mask")
CASES = {
    "base": dict(),
    "stride 2": dict(stride=2),
    "dilation 2": dict(dilation=2, padding=2),
    "no padding": dict(padding=0),
    "groups 2": dict(groups=2),
    "offset groups 2": dict(offset_groups=2),
    "groups 2, offset groups 2, asymmetric": dict(
        groups=2, offset_groups=2, stride=(1, 2), padding=(0, 2), dilation=(2, 1)
    ),
    "groups 2, offset groups 4": dict(groups=2, offset_groups=4, c_out=4),
    "groups 4, offset groups 2": dict(c=8, groups=4, offset_groups=2, c_out=8),
    "mostly outside": dict(scale=20.0),
    "1x1 image": dict(h=1, w=1),
    "batch 1, 1x3 kernel": dict(n=1, k=(1, 3), padding=0),
    "5x5 kernel, stride 2, dilation 2": dict(k=(5, 5), stride=2, padding=3, dilation=2, h=11, w=10),
}


@requires_ops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_mask", [False, True], ids=["v1", "v2 mask"])
@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_equal_torchvision(case, with_mask, device):
    kw = dict(CASES[case])
    conv = {key: kw[key] for key in ("stride", "padding", "dilation") if key in kw}
    conv.setdefault("padding", 1)
    x, offset, weight, bias, mask = inputs(device=device, **kw)
    mask = mask if with_mask else None
    tv_out, tv_grads = values_and_grads(tv_deform_conv2d, x, offset, weight, bias, mask, **conv)
    out, grads = values_and_grads(deform_conv2d, x, offset, weight, bias, mask, **conv)
    assert out.shape == tv_out.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, tv_out, rtol=1e-9, atol=1e-9)
    for name, grad, tv_grad in zip(NAMES, grads, tv_grads):
        torch.testing.assert_close(
            grad, tv_grad, rtol=1e-9, atol=1e-9, msg=lambda m: f"{name} gradient: {m}"
        )


@requires_ops
def test_whole_pixel_offsets_take_torchvisions_one_sided_gradient():
    """Zero and integer offsets (a DCN's initialisation) sample whole pixels, where bilinear
    sampling has a kink: the offset gradient is the cell's right of / below the point, as
    torchvision's; also at -1 and at the last row / column, where the value is 0 or the border."""
    x, _, weight, bias, mask = inputs(n=2, h=5, w=6)
    offset = torch.zeros(2, 18, 5, 6, dtype=torch.float64)
    offset[:, 0::2] = 2.0
    offset[0, 1::2] = -1.0
    for m in (None, mask):
        tv_out, tv_grads = values_and_grads(tv_deform_conv2d, x, offset, weight, bias, m, padding=1)
        out, grads = values_and_grads(deform_conv2d, x, offset, weight, bias, m, padding=1)
        torch.testing.assert_close(out, tv_out, rtol=1e-9, atol=1e-9)
        for name, grad, tv_grad in zip(NAMES, grads, tv_grads):
            torch.testing.assert_close(
                grad, tv_grad, rtol=1e-9, atol=1e-9, msg=lambda msg: f"{name}: {msg}"
            )


@requires_ops
@pytest.mark.parametrize("with_mask", [False, True])
def test_zero_size_batch(with_mask):
    x, offset, weight, bias, mask = inputs(n=0)
    out, grads = values_and_grads(
        deform_conv2d, x, offset, weight, bias, mask if with_mask else None, padding=1
    )
    assert out.shape == (0, 6, 7, 9)
    expected = [x, offset, weight, bias] + ([mask] if with_mask else [])
    for grad, like in zip(grads, expected):
        assert grad.shape == like.shape and not grad.any()
    # The backward op alone: an empty batch gives zero weight gradients.
    grad_input, grad_offset, grad_weight, grad_mask = torch.ops.d2ext._deform_conv2d_backward(
        out, x, offset, weight, [1, 1], [1, 1], [1, 1], mask if with_mask else None, 0, [True] * 4
    )
    assert grad_weight.shape == weight.shape and not grad_weight.any()
    assert grad_input.shape == x.shape and grad_offset.shape == offset.shape
    assert grad_mask.shape == (mask.shape if with_mask else (0,))


@requires_ops
def test_gradcheck_float64():
    x, offset, weight, bias, mask = inputs(
        n=2,
        c=4,
        h=4,
        w=5,
        c_out=4,
        groups=2,
        offset_groups=2,
        stride=(1, 2),
        dilation=(2, 1),
        seed=3,
    )
    offset = offset * 0.3 + 0.25  # away from whole pixels, where bilinear sampling has kinks
    args = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    assert torch.autograd.gradcheck(
        lambda a, o, w, b, m: deform_conv2d(
            a, o, w, b, stride=(1, 2), padding=1, dilation=(2, 1), mask=m
        ),
        args,
    )


def op_values_and_grads(x, offset, weight, bias, mask, chunk_columns, **conv):
    conv = {
        key: list(_pair(conv.get(key, default)))
        for key, default in (("stride", 1), ("padding", 1), ("dilation", 1))
    }

    def fn(a, o, w, b, mask=None):
        return torch.ops.d2ext.deform_conv2d(
            a, o, w, b, conv["stride"], conv["padding"], conv["dilation"], mask, chunk_columns
        )

    return values_and_grads(fn, x, offset, weight, bias, mask)


@requires_ops
@pytest.mark.parametrize("device", DEVICES)
def test_chunked_equals_unchunked(device):
    """Chunks of 1, 5 and 50 positions (parts of an image, their last one shorter), of 63 (one
    whole image) and 130 (two images, the last chunk one) give the unchunked result: 7 x 9 = 63
    positions per image, 3 images."""
    x, offset, weight, bias, mask = inputs(groups=2, offset_groups=2, device=device)
    expected_out, expected_grads = op_values_and_grads(
        x, offset, weight, bias, mask, chunk_columns=10**6
    )
    for chunk in (1, 5, 50, 63, 130):
        out, grads = op_values_and_grads(x, offset, weight, bias, mask, chunk_columns=chunk)
        torch.testing.assert_close(
            out, expected_out, rtol=1e-12, atol=1e-12, msg=lambda m: f"chunk {chunk}: {m}"
        )
        for name, grad, expected in zip(NAMES, grads, expected_grads):
            torch.testing.assert_close(
                grad, expected, rtol=1e-12, atol=1e-12, msg=lambda m: f"chunk {chunk}, {name}: {m}"
            )
    # And the automatic chunk size chunks a large input too (about 2M column values on the CPU).
    x, offset, weight, bias, _ = inputs(
        n=2, c=64, h=40, w=60, c_out=8, scale=2.0, dtype=torch.float32, device=device
    )
    torch.testing.assert_close(
        torch.ops.d2ext.deform_conv2d(x, offset, weight, bias, [1, 1], [1, 1], [1, 1]),
        tv_deform_conv2d(x, offset, weight, bias, padding=1),
        rtol=1e-4,
        atol=1e-4,
    )


@requires_ops
@pytest.mark.parametrize("chunk_columns", [0, 100])
def test_threads_taking_whole_images_equal_torchvision(chunk_columns):
    """With at least as many images as threads, each thread takes whole images (its own column
    buffer and weight-gradient accumulator); with one thread, the chunks run in turn: both give
    torchvision's values and gradients (chunk_columns 100: several chunks per image)."""
    x, offset, weight, bias, mask = inputs(
        n=4, c=16, h=24, w=24, c_out=8, groups=2, offset_groups=2
    )
    expected_out, expected_grads = values_and_grads(
        tv_deform_conv2d, x, offset, weight, bias, mask, padding=1
    )
    threads = torch.get_num_threads()
    try:
        for n_threads in (2, 1):
            torch.set_num_threads(n_threads)
            out, grads = op_values_and_grads(x, offset, weight, bias, mask, chunk_columns)
            torch.testing.assert_close(out, expected_out, rtol=1e-9, atol=1e-9)
            for name, grad, expected in zip(NAMES, grads, expected_grads):
                torch.testing.assert_close(
                    grad,
                    expected,
                    rtol=1e-9,
                    atol=1e-9,
                    msg=lambda m: f"{n_threads} threads, {name}: {m}",
                )
    finally:
        torch.set_num_threads(threads)


@requires_ops
def test_backward_computes_only_what_is_asked():
    x, offset, weight, _, mask = inputs(n=2)
    grad = torch.randn(2, 6, 7, 9, dtype=torch.float64)
    full = torch.ops.d2ext._deform_conv2d_backward(
        grad, x, offset, weight, [1, 1], [1, 1], [1, 1], mask, 0, [True] * 4
    )
    for i in range(4):
        wanted = [j == i for j in range(4)]
        part = torch.ops.d2ext._deform_conv2d_backward(
            grad, x, offset, weight, [1, 1], [1, 1], [1, 1], mask, 0, wanted
        )
        torch.testing.assert_close(part[i], full[i], rtol=0, atol=0)
        if i in (0, 2):  # the input and weight gradients come alone; offset and mask together
            assert all(part[j].numel() == 0 for j in range(4) if j != i)


@requires_ops
def test_float32_and_nan_offsets():
    x, offset, weight, bias, mask = inputs(n=2, c=16, h=12, w=20, c_out=8, dtype=torch.float32)
    tv_out, tv_grads = values_and_grads(tv_deform_conv2d, x, offset, weight, bias, mask, padding=1)
    out, grads = values_and_grads(deform_conv2d, x, offset, weight, bias, mask, padding=1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, tv_out, rtol=1e-4, atol=1e-4)
    for grad, tv_grad in zip(grads, tv_grads):
        torch.testing.assert_close(grad, tv_grad, rtol=1e-4, atol=1e-3)
    # NaN / Inf offsets sample nothing (torchvision's CPU kernel reads out of bounds on them).
    offset[0, :, 3, 4] = float("nan")
    offset[1, :, 5, 6] = float("inf")
    out = deform_conv2d(x, offset, weight, bias, padding=1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, :, 3, 4], bias)


@requires_ops
def test_half_inputs_and_autocast_compute_float32():
    x, offset, weight, bias, mask = inputs(n=1, dtype=torch.float32)
    expected = deform_conv2d(
        x.bfloat16().float(), offset.bfloat16().float(), weight, bias, padding=1
    )
    out = deform_conv2d(x.bfloat16(), offset.bfloat16(), weight, bias, padding=1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.ops.d2ext.deform_conv2d(
            x.bfloat16(), offset.bfloat16(), weight, bias, [1, 1], [1, 1], [1, 1]
        )
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


@requires_ops
def test_bad_arguments_are_named():
    x, offset, weight, bias, mask = inputs(n=2)
    op = torch.ops.d2ext.deform_conv2d
    with pytest.raises(RuntimeError, match=r"offset must have shape \[2, 18, 7, 9\]"):
        op(x, offset[..., :8], weight, bias, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r"offset.size\(1\) \(17\) must be 2 \* offset_groups"):
        op(x, offset[:, :17], weight, bias, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r"mask must have shape \[2, 9, 7, 9\]"):
        op(x, offset, weight, bias, [1, 1], [1, 1], [1, 1], mask[:, :4])
    with pytest.raises(
        RuntimeError,
        match=r"input channels \(4\) must be a multiple of weight.size\(1\) \(3, C / groups\)",
    ):
        op(x, offset, weight[:, :3], bias, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="weight must have the input's dtype"):
        op(x, offset, weight.float(), bias, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="float32 or float64"):
        op(x.half(), offset.half(), weight.half(), None, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="stride must be positive"):
        op(x, offset, weight, bias, [0, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="the output would be empty"):
        op(x[..., :1, :1], offset, weight, bias, [1, 1], [0, 0], [1, 1])


@requires_ops
def test_fake_kernels_give_the_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, offset, weight, bias, mask = inputs(
        n=2, groups=2, offset_groups=2, stride=(2, 1), padding=(0, 2), dilation=(1, 2)
    )
    expected = torch.ops.d2ext.deform_conv2d(x, offset, weight, bias, [2, 1], [0, 2], [1, 2], mask)
    with FakeTensorMode() as mode:
        fx, fo, fw, fb, fm = (mode.from_tensor(t) for t in (x, offset, weight, bias, mask))
        out = torch.ops.d2ext.deform_conv2d(fx, fo, fw, fb, [2, 1], [0, 2], [1, 2], fm)
        assert out.shape == expected.shape == (2, 6, 3, 9) and out.dtype == torch.float64
        grads = torch.ops.d2ext._deform_conv2d_backward(
            out, fx, fo, fw, [2, 1], [0, 2], [1, 2], fm, 0, [True, False, True, True]
        )
        assert [tuple(g.shape) for g in grads] == [
            tuple(x.shape),
            tuple(offset.shape),
            tuple(weight.shape),
            tuple(mask.shape),
        ]
        grads = torch.ops.d2ext._deform_conv2d_backward(
            out, fx, fo, fw, [2, 1], [0, 2], [1, 2], None, 0, [False, False, True, True]
        )
        assert [tuple(g.shape) for g in grads] == [(0,), (0,), tuple(weight.shape), (0,)]


@requires_ops
def test_opcheck():
    x, offset, weight, bias, mask = inputs(n=2, c=4, h=5, w=6, c_out=4, groups=2, offset_groups=2)
    for m in (None, mask):
        torch.library.opcheck(
            torch.ops.d2ext.deform_conv2d.default,
            (
                x.requires_grad_(),
                offset.requires_grad_(),
                weight.requires_grad_(),
                bias,
                [1, 1],
                [1, 1],
                [1, 1],
                m,
            ),
            test_utils=(
                "test_schema",
                "test_autograd_registration",
                "test_faketensor",
                "test_aot_dispatch_dynamic",
            ),
        )


@requires_ops
def test_torch_compile_fullgraph():
    """The layer (a DCN v2 with two weight and two offset groups) compiled whole: fake kernel and
    autograd formula, the op in the graph, the values and gradients of eager mode."""
    torch.manual_seed(0)
    layer = DeformConv2d(4, 6, 3, padding=1, groups=2).double()
    x, offset, _, _, mask = inputs(n=2, c=4, h=6, w=7, offset_groups=2)
    compiled = torch.compile(layer, fullgraph=True)
    leaves_eager = [t.clone().requires_grad_() for t in (x, offset, mask)]
    leaves_compiled = [t.clone().requires_grad_() for t in (x, offset, mask)]
    eager = layer(*leaves_eager)
    traced = compiled(*leaves_compiled)
    torch.testing.assert_close(traced, eager)
    params = list(layer.parameters())
    grads_eager = torch.autograd.grad(eager.sum(), leaves_eager + params)
    grads_compiled = torch.autograd.grad(traced.sum(), leaves_compiled + params)
    for a, b in zip(grads_compiled, grads_eager):
        torch.testing.assert_close(a, b)


@requires_ops
def test_layer_uses_the_op_on_cpu_and_torchvision_when_traced_scripted_or_exported(monkeypatch):
    import d2ext.layers.deform_conv as module

    torch.manual_seed(0)
    layer = DeformConv2d(4, 6, 3, padding=1, groups=2).double()
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    offset = torch.randn(1, 36, 5, 6, dtype=torch.float64)  # two offset groups
    mask = torch.rand(1, 18, 5, 6, dtype=torch.float64)
    calls = []
    real = module.deform_conv2d
    monkeypatch.setattr(module, "deform_conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    expected = tv_deform_conv2d(x, offset, layer.weight, layer.bias, padding=1, mask=mask)
    torch.testing.assert_close(layer(x, offset, mask), expected)
    assert calls == [1]
    traced = torch.jit.trace(layer, (x, offset, mask), check_trace=False)
    assert "torchvision::deform_conv2d" in str(traced.graph)
    torch.testing.assert_close(traced(x, offset, mask), expected)
    torch.testing.assert_close(torch.jit.script(layer)(x, offset, mask), expected)
    exported = torch.export.export(layer, (x, offset, mask))
    assert "torchvision.deform_conv2d" in str(exported.graph) and "d2ext" not in str(exported.graph)
    assert calls == [1]


@requires_ops
def test_other_cpu_variants_match_torchvision():
    """The other CPU variants (cpu_isa.h) of the loops (the rest of this file runs this CPU's
    own), each in a subprocess that forces it, the two at once."""
    from test_cpu_isa import runnable_variants, unforced_env

    variants = [v for v in ("default", "avx2") if v in runnable_variants()[1:]]
    if not variants:
        pytest.skip("this CPU runs only its own variant")
    code = (
        "import sys\n"
        "sys.path[:0] = ['tests', 'tests/layers']\n"
        "import test_deform_conv_op as t\n"
        "from d2ext.layers import cpu_capability\n"
        "assert cpu_capability() == sys.argv[1], cpu_capability()\n"
        "for case in ('base', 'groups 2, offset groups 2, asymmetric', 'mostly outside'):\n"
        "    t.test_values_and_gradients_equal_torchvision(case, True, 'cpu')\n"
        "t.test_float32_and_nan_offsets()\n"
        "t.test_chunked_equals_unchunked('cpu')\n"
    )
    runs = {
        variant: subprocess.Popen(
            [sys.executable, "-c", code, variant],
            cwd=REPO_ROOT,
            text=True,
            env=unforced_env(D2EXT_CPU_CAPABILITY=variant),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for variant in variants
    }
    for variant, run in runs.items():
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, f"{variant}: {stderr[-3000:]}"


def test_fallback_without_compiled_ops_warns_once():
    code = (
        "import warnings, torch\n"
        "from torchvision.ops import deform_conv2d as tv\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    from d2ext.layers import DeformConv2d, deform_conv2d, has_ops\n"
        "    import d2ext.layers.deform_conv as module\n"
        "    x, o = torch.randn(1, 4, 5, 6), torch.randn(1, 18, 5, 6)\n"
        "    layer = DeformConv2d(4, 4, 3, padding=1)\n"
        "    sampled = []\n"
        "    real = module.sampled_deform_conv2d\n"
        "    module.sampled_deform_conv2d = lambda *a, **k: sampled.append(1) or real(*a, **k)\n"
        "    out = [layer(x, o), deform_conv2d(x, o, layer.weight, padding=1), layer(x, o)]\n"
        "assert not has_ops()\n"
        "expected = tv(x, o, layer.weight, layer.bias, padding=1)\n"
        "torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-5)\n"
        "torch.testing.assert_close(out[1], tv(x, o, layer.weight, padding=1))\n"
        "assert sampled == [1, 1], sampled\n"
        "msgs = [str(w.message) for w in caught if 'compiled ops' in str(w.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert 'build_ext --inplace' in msgs[0], msgs[0]\n"
    )
    env = dict(os.environ, D2EXT_DISABLE_OPS="1")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
