"""ATSS assignment on hand-built scenes (values worked out in the comments) and against a
plain per-GT loop written straight from METHODS.md §1.1."""

import statistics

import pytest
import torch

from d2ext.layers.reference import CENTER_INSIDE_EPS
from d2ext.modeling.assigners import atss_assign


def grid_anchors(size, stride, cols, rows, offset_x=0.0):
    """Square anchors of side `size` centred on a cols x rows grid, row-major like Detectron2."""
    ys, xs = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64),
        torch.arange(cols, dtype=torch.float64),
        indexing="ij",
    )
    cx = (xs.flatten() + 0.5) * stride + offset_x
    cy = (ys.flatten() + 0.5) * stride
    half = size / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1)


# A 4x4 grid of 8x8 anchors, stride 8: centres at 4, 12, 20, 28; index = row * 4 + col.
ANCHORS = grid_anchors(8, 8, 4, 4)


def assign(gt, k, anchors=ANCHORS, levels=None):
    gt = torch.tensor(gt, dtype=torch.float64).reshape(-1, 4)
    matched, ious, _ = atss_assign(anchors, levels or [len(anchors)], gt, topk=k)
    return matched, ious


def positives(matched):
    return {i: int(g) for i, g in enumerate(matched.tolist()) if g >= 0}


def test_empty_gt_gives_all_background():
    matched, ious = assign([], k=9)
    assert (matched == -1).all() and (ious == 0).all() and len(matched) == 16


def test_equal_ious_are_all_positive():
    # GT [0,0,16,16] covers anchors 0, 1, 4, 5 (IoU 64/256 = 0.25 each), all 4 tied in distance
    # to its centre (8, 8). k = 4: mean 0.25, std 0 -> all four pass the threshold.
    matched, ious = assign([0, 0, 16, 16], k=4)
    assert positives(matched) == {0: 0, 1: 0, 4: 0, 5: 0}
    torch.testing.assert_close(ious[[0, 1, 4, 5]], torch.full((4,), 0.25, dtype=torch.float64))


def test_distance_ties_go_to_the_lower_anchor_index():
    # Same GT, k = 2: of the four equidistant anchors the two lowest indices are candidates.
    matched, _ = assign([0, 0, 16, 16], k=2)
    assert positives(matched) == {0: 0, 1: 0}


def test_threshold_is_mean_plus_unbiased_std():
    # GT [0,0,12,8]: candidates by distance to (6, 4) with k = 3 are anchors 0 (IoU 64/96),
    # 1 (IoU 32/128 = 0.25) and 4 (IoU 0). Mean 0.3056, unbiased std 0.3368 -> threshold 0.6423:
    # only anchor 0 passes. (A biased std, 0.2750, would give 0.5806: same answer, so also
    # check the number itself.)
    ious = [64 / 96, 0.25, 0.0]
    threshold = statistics.mean(ious) + statistics.stdev(ious)
    assert threshold == pytest.approx(0.6423, abs=1e-4)
    matched, _ = assign([0, 0, 12, 8], k=3)
    assert positives(matched) == {0: 0}


def test_gt_smaller_than_a_stride():
    # GT [2,2,6,6] (4 px, stride 8) inside anchor 0 only: its 9 candidates have IoUs
    # [0.25, 0 x 8] -> mean 0.0278, std 0.0833, threshold 0.111 < 0.25: anchor 0 is positive.
    matched, ious = assign([2, 2, 6, 6], k=9)
    assert positives(matched) == {0: 0}
    assert ious[0].item() == pytest.approx(16 / 64)


def test_gt_with_no_candidate_centre_inside_gets_no_anchor():
    # GT [5,5,11,11] overlaps anchors 0, 1, 4, 5 but contains none of their centres.
    matched, _ = assign([5, 5, 11, 11], k=9)
    assert positives(matched) == {}


def test_centre_must_be_strictly_inside():
    # Anchor 0's centre (4, 4) sits exactly on the GT's left edge: distance 0 < eps.
    matched, _ = assign([4, 0, 12, 8], k=2, anchors=ANCHORS[:2])
    assert 0 not in positives(matched)
    assert CENTER_INSIDE_EPS > 0


def test_conflicts_go_to_the_highest_iou_then_the_lower_gt_index():
    # Anchor 0 is a positive of both GTs; IoU 1.0 with GT 1 beats 0.25 with GT 0.
    matched, ious = assign([[0, 0, 16, 16], [0, 0, 8, 8]], k=4)
    assert matched[0].item() == 1 and ious[0].item() == 1.0
    # Two identical GTs: every positive goes to the first.
    matched, _ = assign([[0, 0, 16, 16], [0, 0, 16, 16]], k=4)
    assert positives(matched) == {0: 0, 1: 0, 4: 0, 5: 0}


def test_levels_smaller_than_k_are_clamped():
    # Level 1 has 2 anchors only: k_l = min(9, 2) must not fail and must still count them.
    coarse = grid_anchors(32, 16, 2, 1)
    anchors = torch.cat([ANCHORS, coarse])
    matched, _ = assign([0, 0, 30, 14], k=9, anchors=anchors, levels=[16, 2])
    assert matched.shape == (18,)
    assert matched.tolist() == naive_atss(anchors, [16, 2], torch.tensor([[0.0, 0, 30, 14]]), 9)[0]


def test_num_anchors_per_level_must_add_up():
    with pytest.raises(ValueError, match="does not sum"):
        atss_assign(ANCHORS, [10], torch.zeros(0, 4), topk=9)


def naive_atss(anchors, levels, gt_boxes, k):
    """METHODS.md §1.1 as plain loops over GTs, levels and anchors (float64). Returns the
    matched GT per anchor and the threshold per GT."""
    anchors, gt_boxes = anchors.tolist(), gt_boxes.tolist()

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
        return iw * ih / union if union > 0 else 0.0

    def centre(b):
        return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2

    claims = {}  # anchor -> list of (iou, gt)
    thresholds = []
    for g, gt in enumerate(gt_boxes):
        gx, gy = centre(gt)
        candidates, start = [], 0
        for n in levels:
            idxs = range(start, start + n)
            dist = lambda i: (centre(anchors[i])[0] - gx) ** 2 + (centre(anchors[i])[1] - gy) ** 2
            candidates += sorted(idxs, key=lambda i: (dist(i), i))[: min(k, n)]
            start += n
        ious = [iou(anchors[i], gt) for i in candidates]
        threshold = (
            statistics.mean(ious) + statistics.stdev(ious) if len(ious) > 1 else float("nan")
        )
        thresholds.append(threshold)
        for i, v in zip(candidates, ious):
            cx, cy = centre(anchors[i])
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > CENTER_INSIDE_EPS
            if v >= threshold and inside:
                claims.setdefault(i, []).append((v, g))
    result = [-1] * len(anchors)
    for i, c in claims.items():
        result[i] = max(c, key=lambda vg: (vg[0], -vg[1]))[1]
    return result, thresholds


def random_scene(seed, num_gt, image=128.0):
    g = torch.Generator().manual_seed(seed)
    # Three levels like an FPN: strides 8, 16, 32 with anchors of 8 x stride.
    levels = [grid_anchors(8 * s, s, int(image // s), int(image // s)) for s in (8, 16, 32)]
    anchors = torch.cat(levels)
    xy = torch.rand(num_gt, 2, generator=g, dtype=torch.float64) * image
    # From 2 px (smaller than any stride) to most of the image.
    wh = torch.exp(torch.rand(num_gt, 2, generator=g, dtype=torch.float64) * 4.0) * 2.0
    gt = torch.cat([xy, (xy + wh).clamp(max=image)], dim=1)
    return anchors, [len(level) for level in levels], gt


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("num_gt", [1, 7, 40])
def test_matches_naive_loops_on_random_scenes(seed, num_gt):
    anchors, levels, gt = random_scene(seed, num_gt)
    matched, ious, thresholds = atss_assign(anchors, levels, gt, topk=9)
    naive_matched, naive_thresholds = naive_atss(anchors, levels, gt, 9)
    assert matched.tolist() == naive_matched
    torch.testing.assert_close(thresholds, torch.tensor(naive_thresholds, dtype=torch.float64))
    pos = matched >= 0
    from d2ext.layers import reference

    expected = reference.pairwise_iou(anchors[pos], gt[matched[pos]]).diagonal()
    torch.testing.assert_close(ious[pos], expected)


def test_many_gt_boxes():
    anchors, levels, gt = random_scene(123, 1000)
    matched, _, _ = atss_assign(anchors, levels, gt, topk=9)
    assert matched.tolist() == naive_atss(anchors, levels, gt, 9)[0]
    assert (matched >= 0).any()
