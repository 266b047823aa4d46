"""atss_assign computes in float32 whatever the input precision: float16 boxes of an ordinary
image (areas above 65504 px^2 overflow float16, every IoU NaN) used to come back with every anchor
unassigned and no error. Through the wrapper (compiled op or its reference fallback) and the
reference itself, float16 / bfloat16 inputs give the float32 assignment; the raw op refuses them."""

import pytest
import torch

from d2ext.layers import assign, atss_assign, has_ops, reference

LOW = [torch.float16, torch.bfloat16]


def _case():
    """Anchors of a 1024 x 1024 image (256 px squares every 32 px, two levels) and two large GTs;
    every coordinate is exact in float16 and bfloat16, so the assignment must not change."""
    centers = torch.arange(16.0, 1024.0, 32.0)
    cy, cx = torch.meshgrid(centers, centers, indexing="ij")
    c = torch.stack([cx.flatten(), cy.flatten()], dim=1)
    anchors = torch.cat(
        [torch.cat([c - 64, c + 64], 1), torch.cat([c[::4] - 128, c[::4] + 128], 1)]
    )
    levels = [len(c), len(c[::4])]
    gt = torch.tensor([[96.0, 96.0, 512.0, 608.0], [544.0, 544.0, 928.0, 960.0]])
    for dtype in LOW:
        assert torch.equal(anchors.to(dtype).float(), anchors) and torch.equal(
            gt.to(dtype).float(), gt
        )
    return anchors, levels, gt


def _assert_same_assignment(low, expected):
    idxs, scores, thresholds = low
    assert torch.equal(idxs, expected[0])
    assert scores.dtype == thresholds.dtype == torch.float32
    torch.testing.assert_close(scores, expected[1])
    torch.testing.assert_close(thresholds, expected[2])


def test_case_overflows_float16():
    """The case is one where float16 arithmetic fails: the GT areas are not finite in float16."""
    _, _, gt = _case()
    wh = (gt[:, 2:] - gt[:, :2]).half()
    assert not torch.isfinite(wh[:, 0] * wh[:, 1]).all()


@pytest.mark.parametrize("use_ops", [True, False], ids=["op", "reference_fallback"])
@pytest.mark.parametrize("dtype", LOW)
def test_wrapper_assigns_low_precision_like_float32(dtype, use_ops, monkeypatch):
    if use_ops and not has_ops():
        pytest.skip("d2ext._C is not built")
    if not use_ops:
        monkeypatch.setattr(assign, "has_ops", lambda: False)
        monkeypatch.setattr(assign, "warn_fallback_once", lambda name: None)
    anchors, levels, gt = _case()
    expected = atss_assign(anchors, levels, gt, 9)
    assert set(expected[0].tolist()) == {-1, 0, 1}  # both GTs have positives
    _assert_same_assignment(atss_assign(anchors.to(dtype), levels, gt.to(dtype), 9), expected)
    # Mixed precisions too (float16 anchors, float32 GTs), and DynamicATSS's predicted boxes.
    _assert_same_assignment(atss_assign(anchors.to(dtype), levels, gt, 9), expected)
    with_preds = atss_assign(anchors, levels, gt, 9, anchors + 8, 1.0, 1.0)
    _assert_same_assignment(
        atss_assign(anchors.to(dtype), levels, gt, 9, (anchors + 8).to(dtype), 1.0, 1.0), with_preds
    )


@pytest.mark.parametrize("dtype", LOW)
def test_reference_assigns_low_precision_like_float32(dtype):
    anchors, levels, gt = _case()
    expected = reference.atss_assign(anchors, levels, gt, 9)
    _assert_same_assignment(
        reference.atss_assign(anchors.to(dtype), levels, gt.to(dtype), 9), expected
    )


@pytest.mark.skipif(not has_ops(), reason="d2ext._C is not built")
@pytest.mark.parametrize("dtype", LOW)
def test_raw_op_refuses_low_precision(dtype):
    """torch.ops.d2ext.atss_assign itself takes float32 / float64 only (under torch.autocast its
    inputs are cast to float32 first, d2ext.layers._autocast): an error, never a silent result."""
    anchors, levels, gt = _case()
    with pytest.raises(RuntimeError, match="anchors must be float32 or float64"):
        torch.ops.d2ext.atss_assign(anchors.to(dtype), levels, gt.to(dtype), 9)
