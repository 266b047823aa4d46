"""FCOS assignment (VFNet's USE_ATSS=False): hand-built scenes, a brute-force loop on random
ones, and VFNet trained with it."""

import math

import pytest
import torch
from conftest import CONFIGS, build_tiny_model, make_inputs
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from d2ext.modeling.assigners import fcos_assign, level_ranges

INF = math.inf
A, B = [0.0, 0, 100, 100], [40.0, 40, 60, 60]  # areas 10000 and 400; B inside A


def assign(points, gt, lower=-INF, upper=INF):
    points = torch.tensor(points)
    lower = torch.as_tensor(lower, dtype=torch.float32).expand(len(points))
    upper = torch.as_tensor(upper, dtype=torch.float32).expand(len(points))
    return fcos_assign(points, lower, upper, torch.tensor(gt).reshape(-1, 4)).tolist()


def test_smallest_containing_gt_wins_and_edges_do_not_contain():
    # (50, 50) is in both: B, the smaller. (10, 10) only in A. (40, 50) is on B's left edge
    # (distance 0): not inside B, so A. (150, 150) is in neither.
    assert assign([[50.0, 50], [10, 10], [40, 50], [150, 150]], [A, B]) == [1, 0, 0, -1]


def test_level_range_of_the_largest_distance_both_ends_included():
    # From (50, 50): B's largest distance is 10, A's 50.
    assert assign([[50.0, 50]], [A, B], upper=9.0) == [-1]
    assert assign([[50.0, 50]], [A, B], lower=11.0) == [0]
    assert assign([[50.0, 50]], [A, B], lower=10.0, upper=10.0) == [1]
    assert assign([[50.0, 50]], [A, B], lower=50.0, upper=50.0) == [0]


def test_equal_areas_go_to_the_first_gt():
    c = [45.0, 45, 65, 65]  # the area of B, also containing (50, 50)
    assert assign([[50.0, 50]], [B, c]) == [0]
    assert assign([[50.0, 50]], [c, B]) == [0]


def test_no_gt_and_degenerate_gt_give_background():
    assert assign([[50.0, 50], [1, 1]], []) == [-1, -1]
    assert assign([[50.0, 50]], [[50.0, 40, 50, 60]]) == [-1]  # zero width: contains no point


def test_level_ranges_and_their_errors():
    lower, upper = level_ranges((64.0, 128.0), [2, 1, 3])
    assert lower.tolist() == [-INF, -INF, 64.0, 128.0, 128.0, 128.0]
    assert upper.tolist() == [64.0, 64.0, 128.0, INF, INF, INF]
    with pytest.raises(
        ValueError, match=r"size bounds \[64.0\] must have one entry less than the levels \(3\)"
    ):
        level_ranges((64.0,), [2, 1, 3])


def brute_force(points, lower, upper, gt):
    matched = []
    for (x, y), lo, hi in zip(points.tolist(), lower.tolist(), upper.tolist()):
        best, best_area = -1, INF
        for j, (x0, y0, x1, y1) in enumerate(gt.tolist()):
            ltrb = (x - x0, y - y0, x1 - x, y1 - y)
            area = (x1 - x0) * (y1 - y0)
            if min(ltrb) > 0 and lo <= max(ltrb) <= hi and area < best_area:
                best, best_area = j, area
        matched.append(best)
    return matched


@pytest.mark.parametrize("seed", range(3))
def test_matches_a_loop_over_points_and_gts(seed):
    g = torch.Generator().manual_seed(seed)
    points = torch.randint(0, 200, (300, 2), generator=g).float()  # on the integer grid: edges hit
    xy = torch.randint(0, 180, (25, 2), generator=g).float()
    gt = torch.cat([xy, xy + torch.randint(0, 120, (25, 2), generator=g)], dim=1)
    lower, upper = level_ranges((16.0, 48.0), [100, 100, 100])
    assert fcos_assign(points, lower, upper, gt).tolist() == brute_force(points, lower, upper, gt)


VFNET_TINY = f"{CONFIGS}/Synthetic/vfnet_R_18_FPN_tiny.yaml"


def test_vfnet_trains_with_fcos_assignment():
    model = build_tiny_model(
        VFNET_TINY, "MODEL.VFNET.USE_ATSS", False, "MODEL.ANCHOR_GENERATOR.OFFSET", 0.5
    )
    assert not model.use_atss and model.fcos_size_bounds == (64.0, 128.0, 256.0, 512.0)
    batch = make_inputs([[[10, 10, 60, 50], [70, 20, 120, 90]], [[5, 5, 20, 30]]])
    model.train()
    with EventStorage():
        losses = model(batch)
        # The labels are FCOS's of the anchor centres (at stride / 2 with OFFSET 0.5).
        images, features = model.preprocess_image(batch), None
        features = [model.backbone(images.tensor)[f] for f in model.head_in_features]
        anchors = model.anchor_generator(features)
        gt_labels, _ = model.label_anchors(anchors, [b["instances"] for b in batch])
    points = Boxes.cat(anchors).get_centers()
    assert points[0].tolist() == [4.0, 4.0]  # stride 8, offset 0.5
    lower, upper = level_ranges(model.fcos_size_bounds, [len(a) for a in anchors])
    for labels, b in zip(gt_labels, batch):
        gt = b["instances"]
        matched = fcos_assign(points, lower, upper, gt.gt_boxes.tensor)
        expected = torch.where(matched >= 0, gt.gt_classes[matched.clamp(min=0)], model.num_classes)
        assert torch.equal(labels, expected) and (matched >= 0).any()
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.head.bbox_pred.weight.grad.abs().sum() > 0


def test_bad_size_bounds_are_named():
    with pytest.raises(ValueError, match=r"MODEL.VFNET.FCOS_SIZE_BOUNDS .* 4 increasing bounds"):
        build_tiny_model(VFNET_TINY, "MODEL.VFNET.FCOS_SIZE_BOUNDS", (64.0, 128.0))
    with pytest.raises(ValueError, match=r"MODEL.VFNET.FCOS_SIZE_BOUNDS"):
        build_tiny_model(VFNET_TINY, "MODEL.VFNET.FCOS_SIZE_BOUNDS", (128.0, 64.0, 256.0, 512.0))
