"""Focal-family losses: compiled kernels vs references, hand values, gradients, edge cases."""

import math

import pytest
import torch
from conftest import DEVICES

from d2ext.layers import (
    ap_loss,
    distribution_focal_loss,
    has_ops,
    quality_focal_loss,
    reference,
    sigmoid_focal_loss,
    varifocal_loss,
)

requires_ops = pytest.mark.skipif(not has_ops(), reason="d2ext._C is not built")
REDUCTIONS = ["none", "sum", "mean"]


def sample(n=40, k=6, dtype=torch.float64, device="cpu", seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, k, generator=g, dtype=torch.float64) * scale).to(
        dtype=dtype, device=device
    )
    labels = torch.randint(-1, k + 1, (n,), generator=g).to(
        device
    )  # includes ignored and background
    scores = torch.rand(n, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    weight = torch.rand(n, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    return logits, labels, scores, weight


# name -> (op, reference, extra positional args built from (labels, scores))
SIGMOID_LOSSES = {
    "focal": (
        sigmoid_focal_loss,
        reference.sigmoid_focal_loss,
        lambda l, s: (l,),
        {"alpha": 0.25, "gamma": 2.0},
    ),
    "focal_no_alpha": (
        sigmoid_focal_loss,
        reference.sigmoid_focal_loss,
        lambda l, s: (l,),
        {"alpha": -1.0, "gamma": 1.5},
    ),
    "qfl": (quality_focal_loss, reference.quality_focal_loss, lambda l, s: (l, s), {"beta": 2.0}),
    "qfl_beta1": (
        quality_focal_loss,
        reference.quality_focal_loss,
        lambda l, s: (l, s),
        {"beta": 1.0},
    ),
    "vfl": (
        varifocal_loss,
        reference.varifocal_loss,
        lambda l, s: (l, s),
        {"alpha": 0.75, "gamma": 2.0},
    ),
    "vfl_unweighted": (
        varifocal_loss,
        reference.varifocal_loss,
        lambda l, s: (l, s),
        {"alpha": 0.75, "gamma": 2.0, "iou_weighted": False},
    ),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(SIGMOID_LOSSES))
def test_sigmoid_losses_match_reference(name, reduction, dtype, device):
    op, ref, args, kwargs = SIGMOID_LOSSES[name]
    logits, labels, scores, weight = sample(dtype=dtype, device=device)
    logits.requires_grad_(True)
    out = op(logits, *args(labels, scores), weight=weight, reduction=reduction, **kwargs)
    expected = ref(logits, *args(labels, scores), weight=weight, reduction=reduction, **kwargs)
    torch.testing.assert_close(out, expected)
    (grad,) = torch.autograd.grad(out.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("name", sorted(SIGMOID_LOSSES))
def test_sigmoid_losses_gradcheck(name):
    op, _, args, kwargs = SIGMOID_LOSSES[name]
    logits, labels, scores, weight = sample(n=12, k=4)
    logits.requires_grad_(True)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda x: op(x, *args(labels, scores), weight=weight, reduction=reduction, **kwargs),
            (logits,),
        )


def test_focal_hand_values():
    # One row, label 0 of K = 2: logit 0 -> p = 0.5 for both classes.
    # positive: 0.25 * 0.5^2 * log 2; negative: 0.75 * 0.5^2 * log 2.
    out = sigmoid_focal_loss(torch.zeros(1, 2), torch.tensor([0]), reduction="none")
    torch.testing.assert_close(out, torch.tensor([[0.0625 * math.log(2), 0.1875 * math.log(2)]]))


def test_qfl_and_vfl_hand_values():
    # Logit 0 (p = 0.5), label 1 with score 0.8, K = 2.
    logits, labels, scores = torch.zeros(1, 2), torch.tensor([1]), torch.tensor([0.8])
    bce_08 = -(0.8 * math.log(0.5) + 0.2 * math.log(0.5))  # = log 2
    qfl = quality_focal_loss(logits, labels, scores, reduction="none")
    torch.testing.assert_close(qfl, torch.tensor([[0.25 * math.log(2), 0.09 * bce_08]]))
    vfl = varifocal_loss(logits, labels, scores, reduction="none")
    torch.testing.assert_close(vfl, torch.tensor([[0.75 * 0.25 * math.log(2), 0.8 * bce_08]]))


def test_dfl_hand_values():
    # Uniform logits over 3 bins: every bin has log-probability -log 3, whatever the target.
    logits = torch.zeros(3, 3)
    out = distribution_focal_loss(logits, torch.tensor([0.0, 1.25, 2.0]), reduction="none")
    torch.testing.assert_close(out, torch.full((3,), math.log(3)))
    # Target 0.25: 0.75 * CE(bin 0) + 0.25 * CE(bin 1).
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_p = torch.log_softmax(logits, 1)[0]
    expected = -(0.75 * log_p[0] + 0.25 * log_p[1])
    torch.testing.assert_close(distribution_focal_loss(logits, torch.tensor([0.25])), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_dfl_matches_reference_and_gradcheck(reduction, device):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(30, 17, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    target = (torch.rand(30, generator=g, dtype=torch.float64) * 16).to(device)
    target[:3] = torch.tensor([0.0, 16.0, 15.9])  # both ends of the range
    weight = torch.rand(30, generator=g, dtype=torch.float64).to(device)
    out = distribution_focal_loss(logits, target, weight, reduction)
    expected = reference.distribution_focal_loss(logits, target, weight, reduction)
    torch.testing.assert_close(out, expected)
    assert torch.autograd.gradcheck(
        lambda x: distribution_focal_loss(x, target, weight, reduction), (logits,)
    )


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("bins", [17, 9])
def test_dfl_float32_blocks_match_reference(bins, weighted):
    # The CPU launcher runs 16 rows at a time across SIMD lanes (17 bins, GFL's default, compiled
    # as such; other counts at run time) and the rest one by one: 1007 rows cover both.
    g = torch.Generator().manual_seed(3)
    n = 1007
    logits = torch.randn(n, bins, generator=g) * 4
    logits[5, 0], logits[6, 1] = 1e4, -1e4  # extreme logits inside a block
    target = torch.rand(n, generator=g) * (bins - 1)
    target[:4] = torch.tensor([0.0, bins - 1.0, bins - 1.1, 3.0])  # both ends, an exact bin
    weight, upstream = torch.rand(n, generator=g), torch.rand(n, generator=g)
    weight = weight if weighted else None  # the kernel's own ones
    x, y = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    out = distribution_focal_loss(x, target, weight, "none")
    expected = reference.distribution_focal_loss(y, target, weight, "none")
    torch.testing.assert_close(out, expected)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)


def test_extreme_logits_stay_finite():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 50.0]], requires_grad=True)
    labels, scores = torch.tensor([0, 2]), torch.tensor([0.9, 0.3])
    for out in (
        sigmoid_focal_loss(logits, labels, reduction="none"),
        quality_focal_loss(logits, labels, scores, reduction="none"),
        varifocal_loss(logits, labels, scores, reduction="none"),
    ):
        (grad,) = torch.autograd.grad(out.sum(), logits)
        assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    # A confident wrong negative (x = 1e4 for a non-label class) costs about x.
    out = sigmoid_focal_loss(logits, labels, alpha=-1, reduction="none")
    assert out[1, 1].item() == pytest.approx(1e4, rel=1e-6)
    dfl = distribution_focal_loss(
        torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True), torch.tensor([1.5])
    )
    assert torch.isfinite(dfl) and dfl.item() == pytest.approx(0.5 * 2e4 + 0.5 * 1e4, rel=1e-6)


def test_ignored_rows_contribute_nothing():
    logits, _, scores, _ = sample(n=8)
    logits.requires_grad_(True)
    labels = torch.full((8,), -1)
    for out in (
        sigmoid_focal_loss(logits, labels),
        quality_focal_loss(logits, labels, scores),
        varifocal_loss(logits, labels, scores),
    ):
        (grad,) = torch.autograd.grad(out, logits)
        assert out.item() == 0 and (grad == 0).all()


def test_no_positives_and_one_positive():
    logits, _, scores, _ = sample(n=10, k=3)
    for labels in (torch.full((10,), 3), torch.tensor([3] * 9 + [1])):
        for op, ref, args, kwargs in SIGMOID_LOSSES.values():
            torch.testing.assert_close(
                op(logits, *args(labels, scores), **kwargs),
                ref(logits, *args(labels, scores), **kwargs),
            )


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_row(n):
    logits, labels, scores, weight = sample(n=n, k=5)
    for reduction in REDUCTIONS:
        out = quality_focal_loss(logits, labels, scores, weight=weight, reduction=reduction)
        torch.testing.assert_close(
            out, reference.quality_focal_loss(logits, labels, scores, 2.0, weight, reduction)
        )
    out = distribution_focal_loss(torch.zeros(n, 5), torch.zeros(n), reduction="none")
    assert out.shape == (n,)


def test_half_logits_are_computed_in_float32():
    logits, labels, _, _ = sample(dtype=torch.float16)
    out = sigmoid_focal_loss(logits, labels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference.sigmoid_focal_loss(logits.float(), labels))


def test_bad_inputs_name_the_value():
    logits, labels, scores, _ = sample(n=4, k=3)
    with pytest.raises(ValueError, match=r"labels must be in \[-1, 3\].*got 7"):
        sigmoid_focal_loss(logits, torch.tensor([0, 1, 7, -1]))
    with pytest.raises(ValueError, match="labels must be int64"):
        sigmoid_focal_loss(logits, labels.int())
    with pytest.raises(ValueError, match="reduction must be one of"):
        quality_focal_loss(logits, labels, scores, reduction="avg")
    with pytest.raises(ValueError, match=r"target must be in \[0, 16\].*got 16.5"):
        distribution_focal_loss(torch.zeros(2, 17), torch.tensor([1.0, 16.5]))
    with pytest.raises(ValueError, match=r"target must be in \[0, 16\].*got -0.5"):
        distribution_focal_loss(torch.zeros(2, 17), torch.tensor([-0.5, 16.5]))
    with pytest.raises(ValueError, match=r"target must be in \[0, 16\].*got nan"):
        distribution_focal_loss(torch.zeros(2, 17), torch.tensor([1.0, float("nan")]))


@requires_ops
def test_dfl_kernel_clamps_targets_it_is_given_unchecked():
    # The op itself (no Python range check) must never index outside a row: NaN counts as 0,
    # and targets outside [0, n] as the nearest end. Rows 3 and 5 are in a 16-row block, 17 and
    # 19 in the rows after the last block.
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(20, 17, generator=g)
    target = torch.rand(20, generator=g) * 16
    target[[3, 17]] = float("nan")
    target[[5, 19]] = torch.tensor([float("inf"), -3.0])
    clamped = target.nan_to_num(0.0).clamp(0, 16)
    loss, grad = torch.ops.d2ext.distribution_focal_loss(logits, target, None, 0)
    expected_loss, expected_grad = torch.ops.d2ext.distribution_focal_loss(logits, clamped, None, 0)
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(grad, expected_grad)
    torch.testing.assert_close(
        loss, reference.distribution_focal_loss(logits, clamped, reduction="none")
    )


@requires_ops
def test_kernel_errors_name_the_argument():
    logits, labels, scores, _ = sample(n=4, k=3)
    with pytest.raises(RuntimeError, match=r"scores must have shape \(4,\)"):
        torch.ops.d2ext.quality_focal_loss(logits, labels, scores[:2], None, 2.0, 1)
    with pytest.raises(RuntimeError, match="weight must have the dtype of the input"):
        torch.ops.d2ext.sigmoid_focal_loss(logits, labels, scores.float(), 0.25, 2.0, 1)


OPCHECK_CASES = {
    "sigmoid_focal_loss": lambda x, l, s, w, r: (x, l, w, 0.25, 2.0, r),
    "quality_focal_loss": lambda x, l, s, w, r: (x, l, s, w, 2.0, r),
    "varifocal_loss": lambda x, l, s, w, r: (x, l, s, w, 0.75, 2.0, True, r),
}


@requires_ops
@pytest.mark.parametrize("reduction", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(OPCHECK_CASES))
def test_opcheck(name, reduction):
    logits, labels, scores, weight = sample(n=6, k=4)
    logits.requires_grad_(True)
    op = getattr(torch.ops.d2ext, name).default
    torch.library.opcheck(op, OPCHECK_CASES[name](logits, labels, scores, weight, reduction))
    torch.library.opcheck(op, OPCHECK_CASES[name](logits, labels, scores, None, reduction))


@requires_ops
@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_opcheck_dfl(reduction):
    logits = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    target = torch.rand(5, dtype=torch.float64) * 8
    torch.library.opcheck(
        torch.ops.d2ext.distribution_focal_loss.default, (logits, target, None, reduction)
    )


@requires_ops
def test_torch_compile_fullgraph():
    def total_loss(logits, labels, scores, bins, target):
        return (
            sigmoid_focal_loss(logits, labels, reduction="sum")
            + quality_focal_loss(logits, labels, scores, reduction="mean")
            + varifocal_loss(logits, labels, scores, reduction="sum")
            + distribution_focal_loss(bins, target, reduction="sum")
        )

    logits, labels, scores, _ = sample(n=16, k=5)
    bins, target = torch.randn(16, 9, dtype=torch.float64), torch.rand(16, dtype=torch.float64) * 8
    compiled = torch.compile(total_loss, fullgraph=True)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    eager = total_loss(x1, labels, scores, bins, target)
    traced = compiled(x2, labels, scores, bins, target)
    torch.testing.assert_close(traced, eager)
    torch.testing.assert_close(
        torch.autograd.grad(traced, x2)[0], torch.autograd.grad(eager, x1)[0]
    )


COMPILED_LABEL_CHECKS = {
    "sigmoid_focal_loss": lambda x, l, s: sigmoid_focal_loss(x, l),
    "quality_focal_loss": lambda x, l, s: quality_focal_loss(x, l, s),
    "varifocal_loss": lambda x, l, s: varifocal_loss(x, l, s),
    "ap_loss": lambda x, l, s: ap_loss(x, l),
}


@pytest.mark.parametrize("name", sorted(COMPILED_LABEL_CHECKS))
def test_label_range_is_checked_under_torch_compile(name):
    # The eager range check was skipped while compiling: label 99 of K = 5 became background.
    fn = torch.compile(COMPILED_LABEL_CHECKS[name], fullgraph=True)
    logits, _, scores, _ = sample(n=8, k=5)
    good = torch.tensor([0, 1, 2, 3, 4, 5, -1, 0])
    fn(logits, good, scores)  # in range: no error
    with pytest.raises(
        RuntimeError, match=r"labels must be in \[-1, 5\] \(K = background\), got a label outside"
    ):
        fn(logits, torch.tensor([0, 1, 99, 3, 4, 5, -1, 0]), scores)


def test_dfl_target_range_is_checked_under_torch_compile():
    fn = torch.compile(lambda x, t: distribution_focal_loss(x, t), fullgraph=True)
    with pytest.raises(RuntimeError, match=r"target must be in \[0, 8\]"):
        fn(torch.randn(3, 9), torch.tensor([1.0, float("nan"), 2.0]))
