"""AP-loss: the O((P+N) log(P+N)) kernel against the O(P*N) reference of the released code."""

import pytest
import torch
from conftest import DEVICES

from d2ext.layers import ap_loss, has_ops, reference

requires_ops = pytest.mark.skipif(not has_ops(), reason="d2ext._C is not built")


def sample(n, k, seed=0, scale=2.0, device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, k, generator=g, dtype=torch.float64) * scale).to(
        device=device, dtype=dtype
    )
    labels = torch.randint(-1, k + 1, (n,), generator=g).to(device)
    return logits, labels


def loss_and_grad(logits, labels, **kwargs):
    x = logits.detach().clone().requires_grad_(True)
    loss = ap_loss(x, labels, **kwargs)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("interpolated", [True, False])
@pytest.mark.parametrize("delta", [1.0, 0.25])
@pytest.mark.parametrize("n, k, seed", [(30, 3, 0), (400, 12, 1), (1500, 20, 2)])
def test_matches_reference(n, k, seed, delta, interpolated, device):
    logits, labels = sample(n, k, seed, device=device)
    loss, grad = loss_and_grad(logits, labels, delta=delta, interpolated=interpolated)
    ref_loss, ref_grad = reference.ap_loss(logits, labels, delta, interpolated)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-12)


def test_float32_matches_reference():
    logits, labels = sample(500, 10, 3, dtype=torch.float32)
    loss, grad = loss_and_grad(logits, labels)
    ref_loss, ref_grad = reference.ap_loss(logits, labels)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-8)


def test_hand_values_one_positive_one_negative():
    # Row 0 is class 0 of K = 1 (positive entry), row 1 background (negative entry); equal
    # scores: H(0) = 1/2, so R+ = 1, R- = 1/2, precision 2/3 and loss 1/3. The positive's update
    # is -(1 - 2/3), the negative's +L = (1/2) / (3/2) = 1/3: equal and opposite.
    logits = torch.zeros(2, 1, dtype=torch.float64)
    loss, grad = loss_and_grad(logits, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(1 / 3)
    torch.testing.assert_close(grad, torch.tensor([[-1 / 3], [1 / 3]], dtype=torch.float64))


def test_hand_values_interpolation():
    # K = 1. Positives at 0 and 4, a negative at 2, delta 1: the low positive is outranked by both
    # (R+ = 2, R- = 1, precision 2/3), the high one by nothing (precision 1). In increasing score
    # the running max is 2/3 then 1: nothing to raise, AP = 5/6 either way.
    logits = torch.tensor([[0.0], [4.0], [2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    for interpolated in (True, False):
        loss, _ = loss_and_grad(logits, labels, interpolated=interpolated)
        assert loss.item() == pytest.approx(1 - (2 / 3 + 1) / 2)
    # Reversed: a negative at 5 above both. Low positive: R+ = 2, R- = 1 -> 2/3; high positive
    # (4): R+ = 1, R- = 1 -> 1/2, raised to 2/3 by interpolation.
    logits = torch.tensor([[0.0], [4.0], [5.0]], dtype=torch.float64)
    interp, _ = loss_and_grad(logits, labels, interpolated=True)
    plain, _ = loss_and_grad(logits, labels, interpolated=False)
    assert interp.item() == pytest.approx(1 - 2 / 3)
    assert plain.item() == pytest.approx(1 - (2 / 3 + 1 / 2) / 2)


def test_update_totals_balance():
    logits, labels = sample(800, 8, 4)
    _, grad = loss_and_grad(logits, labels)
    pos = torch.zeros_like(grad, dtype=torch.bool)
    rows = torch.nonzero((labels >= 0) & (labels < 8)).squeeze(1)
    pos[rows, labels[rows]] = True
    assert grad[pos].sum().item() == pytest.approx(-grad[~pos].sum().item(), rel=1e-9)
    assert (grad[labels < 0] == 0).all()


@pytest.mark.parametrize("labels", [torch.tensor([4, 4, -1, 4]), torch.tensor([-1, -1, -1, -1])])
def test_no_positives_gives_zero_loss_and_gradient(labels):
    logits, _ = sample(4, 4, 5)
    loss, grad = loss_and_grad(logits, labels)
    assert loss.item() == 0 and (grad == 0).all()


def test_one_positive_and_extreme_logits():
    logits = torch.tensor([[1e4, -1e4], [-1e4, 5e3], [3.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2, 2])
    loss, grad = loss_and_grad(logits, labels)
    ref_loss, ref_grad = reference.ap_loss(logits, labels)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # The positive (1e4) beats every negative by far more than delta: AP 1.
    assert loss.item() == 0
    torch.testing.assert_close(grad, ref_grad)


def test_per_image_ranking():
    logits, labels = sample(60, 5, 6)
    labels[40:] = 5  # the last image has no positives: it is left out of the mean
    per_image = ap_loss(logits, labels, rows_per_image=[25, 15, 20])
    firsts = zip(logits[:40].split([25, 15]), labels[:40].split([25, 15]))
    expected = torch.stack([reference.ap_loss(x, y)[0] for x, y in firsts])
    torch.testing.assert_close(per_image, expected.mean())
    with pytest.raises(ValueError, match="does not sum"):
        ap_loss(logits, labels, rows_per_image=[10])


def test_fallback_reference_autograd_gives_the_update():
    from d2ext.layers.fused_losses import _APLossReference

    logits, labels = sample(100, 6, 7)
    x = logits.clone().requires_grad_(True)
    _APLossReference.apply(x, labels, 1.0, True).backward()
    torch.testing.assert_close(x.grad, reference.ap_loss(logits, labels)[1])


def test_bad_delta_is_named():
    logits, labels = sample(4, 2)
    with pytest.raises(ValueError, match="delta must be > 0, got -1"):
        ap_loss(logits, labels, delta=-1.0)


@requires_ops
def test_opcheck():
    logits, labels = sample(40, 5, 8)
    logits.requires_grad_(True)
    torch.library.opcheck(torch.ops.d2ext.ap_loss.default, (logits, labels, 1.0, True))
    torch.library.opcheck(torch.ops.d2ext.ap_loss.default, (logits, labels, 0.5, False))


@requires_ops
def test_torch_compile_fullgraph():
    logits, labels = sample(64, 4, 9)
    compiled = torch.compile(lambda x, y: ap_loss(x, y) * 2.0, fullgraph=True)
    x1, x2 = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    eager = ap_loss(x1, labels) * 2.0
    traced = compiled(x2, labels)
    torch.testing.assert_close(traced, eager)
    torch.testing.assert_close(
        torch.autograd.grad(traced, x2)[0], torch.autograd.grad(eager, x1)[0]
    )
