"""Balanced L1 loss (Libra R-CNN eq. 7-9) and its use as the R-CNN box regression loss."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform

from d2ext.modeling.losses import balanced_l1_loss
from d2ext.modeling.roi_heads import LibraFastRCNNOutputLayers

ALPHA, GAMMA = 0.5, 1.5
B = math.exp(GAMMA / ALPHA) - 1  # e^3 - 1 = 19.0855...


def closed_form(x, alpha=ALPHA, gamma=GAMMA, beta=1.0):
    b = math.exp(gamma / alpha) - 1
    if x < beta:
        return alpha / b * (b * x + 1) * math.log(b * x / beta + 1) - alpha * x
    return gamma * x + gamma / b - alpha * beta


@pytest.mark.parametrize("x", [0.0, 0.01, 0.25, 0.5, 0.999, 1.0, 2.0, 7.5])
def test_matches_closed_form(x):
    pred, target = (
        torch.tensor([x + 0.3], dtype=torch.float64),
        torch.tensor([0.3], dtype=torch.float64),
    )
    assert balanced_l1_loss(pred, target).item() == pytest.approx(
        closed_form(x), rel=1e-9, abs=1e-12
    )
    # Symmetric in the sign of the error.
    assert balanced_l1_loss(target, pred).item() == pytest.approx(
        closed_form(x), rel=1e-9, abs=1e-12
    )


def test_hand_values():
    # x = 2 (outlier): 1.5 * 2 + 1.5 / (e^3 - 1) - 0.5 = 2.578594...
    assert closed_form(2.0) == pytest.approx(2.5785940, abs=1e-6)
    loss = balanced_l1_loss(torch.tensor([2.0, 0.0]), torch.zeros(2), reduction="none")
    torch.testing.assert_close(loss, torch.tensor([2.5785940, 0.0]))
    # x = 0.5 (inlier): 0.5 / b * (0.5 b + 1) * ln(0.5 b + 1) - 0.25
    expected = 0.5 / B * (0.5 * B + 1) * math.log(0.5 * B + 1) - 0.25
    assert balanced_l1_loss(torch.tensor([0.5]), torch.zeros(1)).item() == pytest.approx(
        expected, rel=1e-6
    )


@pytest.mark.parametrize("beta", [0.11, 0.5, 1.0, 2.0])
def test_continuous_at_beta(beta):
    eps = 1e-9
    x = torch.tensor([beta - eps, beta, beta + eps], dtype=torch.float64)
    loss = balanced_l1_loss(x, torch.zeros_like(x), beta=beta)
    assert (loss.max() - loss.min()).item() < 1e-7
    # Both branches meet at gamma * beta + gamma / b - alpha * beta.
    assert loss[1].item() == pytest.approx(GAMMA * beta + GAMMA / B - ALPHA * beta)


def test_analytic_gradient():
    # d/dx: alpha * ln(b x / beta + 1) + alpha (b x + 1) / (b x + beta) - alpha inside (beta = 1:
    # alpha * ln(b x + 1)), gamma outside; times the sign of pred - target.
    for beta in (1.0, 0.5):
        x = torch.tensor([0.05, 0.3, 0.45, 0.9, 1.5, 4.0], dtype=torch.float64)
        pred = (x.clone() * torch.tensor([1, -1, 1, -1, 1, -1])).requires_grad_()
        balanced_l1_loss(pred, torch.zeros_like(pred), beta=beta, reduction="sum").backward()
        inner = ALPHA * torch.log(B * x / beta + 1) + ALPHA * (B * x + 1) / (B * x + beta) - ALPHA
        expected = torch.where(x < beta, inner, torch.full_like(x, GAMMA)) * torch.sign(
            pred.detach()
        )
        torch.testing.assert_close(pred.grad, expected)
    # beta = 1: the gradient is continuous at x = 1 (alpha ln(b + 1) = gamma) and is larger than
    # smooth L1's (= x) for small errors, which is the point of the loss.
    x = torch.tensor([0.999999, 1.000001, 0.1], dtype=torch.float64, requires_grad=True)
    balanced_l1_loss(x, torch.zeros_like(x), reduction="sum").backward()
    assert x.grad[0].item() == pytest.approx(x.grad[1].item(), abs=1e-5)
    assert x.grad[2].item() > 0.1


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    # Errors away from 0 and beta (kinks of |x| and, for beta != 1, of the derivative).
    target = torch.rand(24, generator=g, dtype=torch.float64)
    offset = torch.rand(24, generator=g, dtype=torch.float64) * 2.5 + 0.05
    offset = torch.where((offset - 1.0).abs() < 0.05, offset + 0.1, offset)
    sign = torch.where(torch.arange(24) % 2 == 0, 1.0, -1.0).double()
    pred = (target + sign * offset).requires_grad_()
    for beta in (1.0, 0.5):
        assert torch.autograd.gradcheck(
            lambda p: balanced_l1_loss(p, target, beta=beta, reduction="none"), (pred,)
        )


def test_reductions_and_bad_arguments():
    pred, target = torch.tensor([0.5, 2.0]), torch.zeros(2)
    full = balanced_l1_loss(pred, target)
    assert balanced_l1_loss(pred, target, reduction="sum").item() == pytest.approx(
        full.sum().item()
    )
    assert balanced_l1_loss(pred, target, reduction="mean").item() == pytest.approx(
        full.mean().item()
    )
    assert balanced_l1_loss(torch.zeros(0), torch.zeros(0), reduction="mean").item() == 0.0
    with pytest.raises(ValueError, match="beta > 0"):
        balanced_l1_loss(pred, target, beta=0.0)
    with pytest.raises(ValueError, match="reduction"):
        balanced_l1_loss(pred, target, reduction="avg")


def predictor(loss_type):
    return LibraFastRCNNOutputLayers(
        ShapeSpec(channels=8),
        box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        num_classes=3,
        box_reg_loss_type=loss_type,
    )


def test_box_predictor_uses_balanced_l1_on_foreground_deltas():
    g = torch.Generator().manual_seed(0)
    proposals = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 30], [0, 0, 4, 4], [1, 1, 9, 9.0]])
    gt = torch.tensor([[1, 0, 11, 12], [4, 6, 22, 28], [0, 0, 4, 4], [0, 0, 30, 30.0]])
    gt_classes = torch.tensor([2, 0, 3, 1])  # the third is background (class 3 = num_classes)
    deltas = torch.randn(4, 12, generator=g)
    head = predictor("balanced_l1")
    loss = head.box_reg_loss(proposals, gt, deltas, gt_classes)
    fg = [0, 1, 3]
    picked = deltas.view(4, 3, 4)[fg, gt_classes[fg]]
    target = head.box2box_transform.get_deltas(proposals[fg], gt[fg])
    expected = balanced_l1_loss(picked, target, reduction="sum") / 4  # / all sampled proposals
    torch.testing.assert_close(loss, expected)
    # Other types are Detectron2's: smooth L1 (beta 0 = L1) on the same deltas.
    smooth = predictor("smooth_l1").box_reg_loss(proposals, gt, deltas, gt_classes)
    torch.testing.assert_close(smooth, (picked - target).abs().sum() / 4)
    # Only background: zero, with a graph.
    zero = head.box_reg_loss(proposals, gt, deltas.requires_grad_(), torch.full((4,), 3))
    assert zero.item() == 0 and zero.requires_grad


def test_bad_loss_type_names_the_key():
    with pytest.raises(ValueError, match="MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE"):
        predictor("balanced_l2")
