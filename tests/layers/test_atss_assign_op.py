"""d2ext.layers.atss_assign (memory-linear kernel) against the dense reference, ATSS and
DynamicATSS (combined IoU); the hand-built ATSS cases are in tests/modeling/test_atss_assign.py."""

import pytest
import torch
from conftest import DEVICES

from d2ext.layers import atss_assign, has_ops, reference

requires_ops = pytest.mark.skipif(not has_ops(), reason="d2ext._C is not built")
STRIDES = (8, 16, 32, 64, 128)


def scene(seed, num_gt, image=(160, 224), dtype=torch.float32, device="cpu", tiny=False):
    """FPN-like anchors (8 x stride squares on every level) and random GTs, incl. sub-stride ones."""
    g = torch.Generator().manual_seed(seed)
    levels = []
    for s in STRIDES:
        h, w = -(-image[0] // s), -(-image[1] // s)
        ys, xs = torch.meshgrid(torch.arange(h) * s, torch.arange(w) * s, indexing="ij")
        c = torch.stack([xs.flatten(), ys.flatten()], 1).double()
        levels.append(torch.cat([c - 4 * s, c + 4 * s], 1))
    anchors = torch.cat(levels)
    xy = torch.rand(num_gt, 2, generator=g, dtype=torch.float64) * torch.tensor(
        [image[1], image[0]]
    )
    wh = (
        torch.exp(torch.rand(num_gt, 2, generator=g, dtype=torch.float64) * (2.0 if tiny else 5.0))
        * 2
    )
    gt = torch.cat([xy, xy + wh], 1)
    # Predicted boxes: the anchors moved and resized a little, as an early regressor would.
    jitter = torch.randn(anchors.shape, generator=g, dtype=torch.float64) * 6
    preds = anchors + jitter
    preds[:, 2:] = torch.maximum(preds[:, 2:], preds[:, :2] + 1)
    cast = dict(dtype=dtype, device=device)
    return anchors.to(**cast), [len(x) for x in levels], gt.to(**cast), preds.to(**cast)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_gt", [0, 1, 5, 60])
@pytest.mark.parametrize("seed", range(3))
def test_atss_equals_dense_reference(seed, num_gt, dtype, device):
    anchors, levels, gt, _ = scene(seed, num_gt, dtype=dtype, device=device)
    idxs, scores, thresholds = atss_assign(anchors, levels, gt, 9)
    ref_idxs, ref_scores, ref_thresholds = reference.atss_assign(anchors, levels, gt, 9)
    assert torch.equal(idxs, ref_idxs)
    assert torch.equal(scores, ref_scores)
    assert thresholds.shape == (num_gt,) and thresholds.dtype == dtype
    # Summation order differs (sequential vs torch's): thresholds agree to an ulp or two.
    torch.testing.assert_close(thresholds, ref_thresholds, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.5, 1.5)])
@pytest.mark.parametrize("seed", range(3))
def test_dynamic_atss_equals_dense_reference(seed, weights):
    anchors, levels, gt, preds = scene(seed, 30)
    idxs, scores, thresholds = atss_assign(anchors, levels, gt, 9, preds, *weights)
    ref_idxs, ref_scores, ref_thresholds = reference.atss_assign(
        anchors, levels, gt, 9, preds, *weights
    )
    assert torch.equal(idxs, ref_idxs) and torch.equal(scores, ref_scores)
    torch.testing.assert_close(thresholds, ref_thresholds, rtol=1e-6, atol=0)
    assert (idxs >= 0).any()
    # Scores are combined IoUs: weighted sums of two IoUs.
    assert scores.max() <= sum(weights) + 1e-6


def test_dynamic_atss_with_anchors_as_predictions_is_atss_on_doubled_ious():
    # Predicted boxes equal to the anchors: combined IoU = 2 IoU, threshold = 2 (mean + std),
    # so the assignment is ATSS's and the scores double.
    anchors, levels, gt, _ = scene(4, 20)
    idxs, scores, thresholds = atss_assign(anchors, levels, gt, 9, anchors.clone())
    ref_idxs, ref_scores, ref_thresholds = atss_assign(anchors, levels, gt, 9)
    assert torch.equal(idxs, ref_idxs)
    torch.testing.assert_close(scores, 2 * ref_scores)
    torch.testing.assert_close(thresholds, 2 * ref_thresholds)


def test_thousand_gts_and_tiny_gts():
    anchors, levels, gt, _ = scene(5, 1000, image=(320, 416))
    assert torch.equal(
        atss_assign(anchors, levels, gt, 9)[0], reference.atss_assign(anchors, levels, gt, 9)[0]
    )
    anchors, levels, gt, _ = scene(6, 200, tiny=True)  # 2-15 px: many smaller than a stride
    assert torch.equal(
        atss_assign(anchors, levels, gt, 9)[0], reference.atss_assign(anchors, levels, gt, 9)[0]
    )


def test_levels_with_fewer_anchors_than_k_and_empty_levels():
    anchors, levels, gt, _ = scene(7, 10, image=(40, 40))  # P6/P7 have 1 anchor: k clamps to 1
    assert levels[-1] == 1
    assert torch.equal(
        atss_assign(anchors, levels, gt, 9)[0], reference.atss_assign(anchors, levels, gt, 9)[0]
    )
    with_empty = levels[:2] + [0] + levels[2:]
    assert torch.equal(
        atss_assign(anchors, with_empty, gt, 9)[0],
        reference.atss_assign(anchors, with_empty, gt, 9)[0],
    )


def test_bad_arguments_are_named():
    anchors, levels, gt, preds = scene(8, 3)
    with pytest.raises(ValueError, match="does not sum"):
        atss_assign(anchors, levels[:-1], gt, 9)


@requires_ops
def test_kernel_checks_name_the_argument():
    anchors, levels, gt, preds = scene(8, 3)
    with pytest.raises(RuntimeError, match="pred_boxes must have the shape of anchors"):
        torch.ops.d2ext.atss_assign(anchors, levels, gt, 9, preds[:5], 1.0, 1.0)
    with pytest.raises(RuntimeError, match="gt_boxes must have shape"):
        torch.ops.d2ext.atss_assign(anchors, levels, gt[:, :3], 9, None, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="topk must be >= 1"):
        torch.ops.d2ext.atss_assign(anchors, levels, gt, 0, None, 1.0, 1.0)


@requires_ops
def test_opcheck():
    anchors, levels, gt, preds = scene(9, 4, image=(64, 64))
    utils = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(
        torch.ops.d2ext.atss_assign.default,
        (anchors, levels, gt, 9, None, 1.0, 1.0),
        test_utils=utils,
    )
    torch.library.opcheck(
        torch.ops.d2ext.atss_assign.default,
        (anchors, levels, gt, 9, preds, 1.0, 1.0),
        test_utils=utils,
    )


@requires_ops
def test_torch_compile_fullgraph():
    anchors, levels, gt, _ = scene(10, 6, image=(64, 64))

    def positives(anchors, gt):
        idxs, scores, _ = atss_assign(anchors, levels, gt, 9)
        return (idxs >= 0).sum(), scores.sum()

    compiled = torch.compile(positives, fullgraph=True)
    expected = positives(anchors, gt)
    actual = compiled(anchors, gt)
    assert torch.equal(actual[0], expected[0]) and torch.equal(actual[1], expected[1])
