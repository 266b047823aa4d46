"""d2ext.layers.pairwise_iou: compiled kernel vs reference and hand-computed values."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import DEVICES, REPO_ROOT

from d2ext.layers import has_ops, pairwise_iou, reference

requires_ops = pytest.mark.skipif(not has_ops(), reason="d2ext._C is not built")


def random_boxes(n, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 50
    return torch.cat([xy, xy + wh], dim=1).to(dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["iou", "giou"])
def test_matches_reference(device, dtype, mode):
    a, b = random_boxes(57, dtype, device, 1), random_boxes(33, dtype, device, 2)
    out = pairwise_iou(a, b, mode)
    assert out.shape == (57, 33) and out.dtype == dtype
    torch.testing.assert_close(out, reference.pairwise_iou(a, b, mode))


def test_hand_computed_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 0.0, 6.0, 1.0]])
    # Overlap 1, union 4 + 4 - 1 = 7; the enclosing box of the first pair is 3x3 = 9, of the
    # disjoint pair 6x2 = 12 with union 5.
    torch.testing.assert_close(pairwise_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0]]))
    torch.testing.assert_close(
        pairwise_iou(a, b, "giou"), torch.tensor([[1 / 7 - 2 / 9, 1.0, -7 / 12]])
    )


def test_degenerate_and_inverted_boxes():
    a = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    out = pairwise_iou(a, a)
    # A zero-area or inverted box has an empty union with itself: IoU 0, never NaN.
    torch.testing.assert_close(out.diagonal(), torch.tensor([0.0, 0.0, 1.0]))
    assert torch.isfinite(pairwise_iou(a, a, "giou")).all()
    torch.testing.assert_close(pairwise_iou(a, a, "giou"), reference.pairwise_iou(a, a, "giou"))


@pytest.mark.parametrize("n, m", [(0, 5), (4, 0), (0, 0)])
def test_empty_inputs(n, m):
    out = pairwise_iou(random_boxes(n), random_boxes(m))
    assert out.shape == (n, m)


def test_half_is_computed_in_float32():
    a = random_boxes(5).half()
    out = pairwise_iou(a, a)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference.pairwise_iou(a.float(), a.float()))


def test_many_boxes():
    a, b = random_boxes(3000, seed=3), random_boxes(1000, seed=4)
    torch.testing.assert_close(pairwise_iou(a, b), reference.pairwise_iou(a, b))


@requires_ops
def test_bad_input_names_the_argument():
    with pytest.raises(RuntimeError, match="boxes2 must have shape"):
        pairwise_iou(random_boxes(3), torch.zeros(3, 5))
    with pytest.raises(RuntimeError, match="same dtype"):
        pairwise_iou(random_boxes(3), random_boxes(3, torch.float64))
    with pytest.raises(ValueError, match="mode must be one of"):
        pairwise_iou(random_boxes(3), random_boxes(3), "diou")


@requires_ops
def test_opcheck():
    for mode in (0, 1):
        torch.library.opcheck(
            torch.ops.d2ext.pairwise_iou.default,
            (random_boxes(6), random_boxes(4), mode),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
        )


@requires_ops
def test_torch_compile_fullgraph():
    def best_match(a, b):
        return pairwise_iou(a, b).max(dim=1)

    compiled = torch.compile(best_match, fullgraph=True)
    a, b = random_boxes(20), random_boxes(7)
    expected = best_match(a, b)
    actual = compiled(a, b)
    torch.testing.assert_close(actual.values, expected.values)
    torch.testing.assert_close(actual.indices, expected.indices)


def test_fallback_without_compiled_ops_warns_once():
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    from d2ext.layers import has_ops, pairwise_iou, reference\n"
        "    a = torch.tensor([[0., 0., 2., 2.], [1., 1., 3., 3.]])\n"
        "    out = [pairwise_iou(a, a, m) for m in ('iou', 'giou', 'iou')]\n"
        "assert not has_ops()\n"
        "assert torch.equal(out[0], reference.pairwise_iou(a, a))\n"
        "msgs = [str(w.message) for w in caught if 'compiled ops' in str(w.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert 'build_ext --inplace' in msgs[0], msgs[0]\n"
    )
    env = dict(os.environ, D2EXT_DISABLE_OPS="1")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# ---- aligned IoU and the GIoU loss -----------------------------------------------------------

from d2ext.layers import aligned_iou, giou_loss  # noqa: E402


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["iou", "giou"])
def test_aligned_iou_is_the_diagonal_of_pairwise(mode, device):
    a, b = random_boxes(50, torch.float64, device, 5), random_boxes(50, torch.float64, device, 6)
    torch.testing.assert_close(aligned_iou(a, b, mode), pairwise_iou(a, b, mode).diagonal())
    torch.testing.assert_close(aligned_iou(a, b, mode), reference.aligned_iou(a, b, mode))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_giou_loss_matches_reference_and_gradcheck(reduction, device):
    pred = random_boxes(40, torch.float64, device, 7).requires_grad_(True)
    target = random_boxes(40, torch.float64, device, 8)
    weight = torch.rand(40, dtype=torch.float64, device=device)
    out = giou_loss(pred, target, weight, reduction)
    expected = reference.giou_loss(pred, target, weight, reduction)
    torch.testing.assert_close(out, expected)
    (grad,) = torch.autograd.grad(out.sum(), pred)
    (expected_grad,) = torch.autograd.grad(expected.sum(), pred)
    torch.testing.assert_close(grad, expected_grad)
    assert torch.autograd.gradcheck(lambda p: giou_loss(p, target, weight, reduction), (pred,))


def test_giou_loss_hand_values():
    # IoU 1/7, enclosure 9, union 7: GIoU = 1/7 - 2/9. Disjoint: IoU 0, enclosure 12, union 5.
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 0.0, 6.0, 1.0]])
    expected = torch.tensor([1 - (1 / 7 - 2 / 9), 0.0, 1 + 7 / 12])
    torch.testing.assert_close(giou_loss(pred, target, reduction="none"), expected)
    torch.testing.assert_close(
        giou_loss(pred, target, torch.tensor([2.0, 1.0, 0.0])), 2 * expected[0]
    )


def test_giou_loss_degenerate_boxes_stay_finite():
    pred = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 1.0, 1.0], [1.0, 1.0, 4.0, 4.0]], requires_grad=True
    )
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 4.0]])
    out = giou_loss(pred, target, reduction="none")
    (grad,) = torch.autograd.grad(out.sum(), pred)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(out, reference.giou_loss(pred, target, reduction="none"))
    assert out[2].item() == 0  # identical boxes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_giou_loss_ties_and_degenerate_boxes_in_simd_lanes(dtype):
    # The CPU kernel runs pairs in SIMD lanes: corners on a coarse integer grid give many ties
    # (gradient split 0.5 / 0.5 like torch.maximum's), zero-area and inverted boxes, identical
    # pairs, and 1003 pairs leave a remainder after the vector loop.
    g = torch.Generator().manual_seed(21)
    pred = torch.randint(0, 5, (1003, 4), generator=g).to(dtype).requires_grad_(True)
    target = torch.randint(0, 5, (1003, 4), generator=g).to(dtype)
    target[:100] = pred[:100].detach()
    upstream = torch.rand(1003, generator=g, dtype=torch.float64).to(dtype)
    out = giou_loss(pred, target, reduction="none")
    expected = reference.giou_loss(pred, target, reduction="none")
    torch.testing.assert_close(out, expected)
    (grad,) = torch.autograd.grad((out * upstream).sum(), pred)
    (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), pred)
    torch.testing.assert_close(grad, expected_grad)


@requires_ops
@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_giou_loss_opcheck(reduction):
    pred = random_boxes(8, torch.float64, seed=9).requires_grad_(True)
    target = random_boxes(8, torch.float64, seed=10)
    torch.library.opcheck(torch.ops.d2ext.giou_loss.default, (pred, target, None, reduction))
    torch.library.opcheck(
        torch.ops.d2ext.giou_loss.default,
        (pred, target, torch.rand(8, dtype=torch.float64), reduction),
    )
    torch.library.opcheck(
        torch.ops.d2ext.aligned_iou.default,
        (pred.detach(), target, 1),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


# ---- combined IoU (DynamicATSS) ---------------------------------------------------------------

from d2ext.layers import combined_iou  # noqa: E402


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.3, 1.7)])
def test_combined_iou_matches_reference(weights, device):
    anchors, preds = (
        random_boxes(80, torch.float64, device, 11),
        random_boxes(80, torch.float64, device, 12),
    )
    gt = random_boxes(9, torch.float64, device, 13)
    out = combined_iou(anchors, preds, gt, *weights)
    assert out.shape == (80, 9)
    torch.testing.assert_close(out, reference.combined_iou(anchors, preds, gt, *weights))
    # Hand check: predictions equal to the anchors give (w_a + w_p) IoU.
    torch.testing.assert_close(
        combined_iou(anchors, anchors, gt, *weights), sum(weights) * pairwise_iou(anchors, gt)
    )


@requires_ops
def test_combined_iou_opcheck_and_errors():
    anchors, preds, gt = (
        random_boxes(7, seed=14),
        random_boxes(7, seed=15),
        random_boxes(3, seed=16),
    )
    torch.library.opcheck(
        torch.ops.d2ext.combined_iou.default,
        (anchors, preds, gt, 1.0, 1.0),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )
    with pytest.raises(RuntimeError, match="pred_boxes must have the shape of anchors"):
        combined_iou(anchors, preds[:3], gt)
    assert combined_iou(anchors[:0], preds[:0], gt).shape == (0, 3)


# ---- NaN / Inf boxes (issue #15 item 6) --------------------------------------------------------

NAN, INF = float("nan"), float("inf")


def non_finite_pairs(dtype=torch.float64):
    """Predicted boxes with NaN in each coordinate, all NaN, a NaN target, +-Inf, between finite
    pairs (17 rows: SIMD lanes and a remainder)."""
    pred = random_boxes(17, dtype, seed=31)
    target = random_boxes(17, dtype, seed=32)
    for row, col in ((1, 0), (3, 1), (5, 2), (7, 3)):
        pred[row, col] = NAN
    pred[9] = NAN
    target[11, 2] = NAN
    pred[13] = torch.tensor([INF, 0.0, 5.0, 5.0], dtype=dtype)  # inverted: zero area, finite GIoU
    pred[14] = torch.tensor([0.0, 0.0, INF, 5.0], dtype=dtype)  # infinite area: inf - inf = NaN
    pred[15] = torch.tensor([-INF, -INF, INF, INF], dtype=dtype)
    nan_rows = torch.tensor([1, 3, 5, 7, 9, 11])
    return pred, target, nan_rows


@pytest.mark.parametrize("mode", ["iou", "giou"])
def test_nan_boxes_give_nan_overlaps_as_the_reference(mode):
    # The kernels turned a NaN box into IoU 0 / GIoU -1 (a finite loss of 2 next to NaN losses).
    pred, target, nan_rows = non_finite_pairs()
    out = aligned_iou(pred, target, mode)
    torch.testing.assert_close(out, reference.aligned_iou(pred, target, mode), equal_nan=True)
    assert out[nan_rows].isnan().all()
    pairwise = pairwise_iou(pred, target, mode)
    torch.testing.assert_close(pairwise, reference.pairwise_iou(pred, target, mode), equal_nan=True)
    assert pairwise[nan_rows[:-1]].isnan().all() and pairwise[:, 11].isnan().all()
    torch.testing.assert_close(pairwise.diagonal(), out, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_giou_loss_of_nan_boxes_is_nan_with_nan_gradient_as_the_reference(dtype):
    pred, target, nan_rows = non_finite_pairs(dtype)
    pred.requires_grad_(True)
    weight = torch.rand(17, dtype=dtype)
    out = giou_loss(pred, target, weight, reduction="none")
    expected = reference.giou_loss(pred, target, weight, reduction="none")
    torch.testing.assert_close(out, expected, equal_nan=True)
    assert out[nan_rows].isnan().all()
    (grad,) = torch.autograd.grad(out.sum(), pred)
    (expected_grad,) = torch.autograd.grad(expected.sum(), pred)
    torch.testing.assert_close(grad, expected_grad, equal_nan=True)
    # A NaN box gets no finite update on any coordinate; the finite rows keep theirs.
    assert grad[nan_rows].isnan().all()
    finite = torch.ones(17, dtype=torch.bool)
    finite[nan_rows] = False
    finite[[14, 15]] = False
    assert torch.isfinite(grad[finite]).all() and torch.isfinite(out[finite]).all()
    assert giou_loss(pred, target, reduction="sum").isnan()
