"""Pre-NMS top-k of the ATSS family over (location, class) pairs or over locations (METHODS.md
Errata 6), and boxes clipped to the image before NMS, on hand-built scores."""

import os

import pytest
import torch
from conftest import CONFIGS, build_tiny_model
from detectron2.structures import Boxes

GFL_TINY = os.path.join(CONFIGS, "Synthetic", "gfl_R_18_FPN_tiny.yaml")
IMAGE_SIZE = (400, 400)  # (height, width)

# Two levels; scores (R_l, K = 3) are final scores, 0 where not a candidate.
SCORES = [
    torch.tensor([[0.9, 0.8, 0.0], [0.0, 0.0, 0.85], [0.7, 0.75, 0.6], [0.1, 0.0, 0.0]]),
    torch.tensor([[0.0, 0.3, 0.0], [0.2, 0.0, 0.4]]),
]
# Location centres (x, y), 100 px apart so that NMS keeps every box; location 2 of level 0
# sits at the left edge and its box leaves the image.
CENTRES = [
    torch.tensor([[100.0, 100.0], [200.0, 100.0], [2.0, 200.0], [300.0, 300.0]]),
    torch.tensor([[100.0, 300.0], [300.0, 200.0]]),
]
HALF_SIDE = 5.0  # every location predicts l = t = r = b = 5 px


def anchors_and_deltas():
    anchors = [Boxes(torch.cat([c - 32, c + 32], dim=1)) for c in CENTRES]
    deltas = [torch.full((len(c), 4), HALF_SIDE) for c in CENTRES]
    return anchors, deltas


def expected_detections(picks):
    """(score, class, box) sorted by score, for picks of (level, location, class); boxes are
    the location's box clipped to the image."""
    out = []
    for level, loc, cls in picks:
        x, y = CENTRES[level][loc].tolist()
        box = [max(x - HALF_SIDE, 0.0), max(y - HALF_SIDE, 0.0), x + HALF_SIDE, y + HALF_SIDE]
        out.append((SCORES[level][loc, cls].item(), cls, box))
    return sorted(out, key=lambda d: -d[0])


@pytest.fixture(scope="module")
def gfl():
    model = build_tiny_model(GFL_TINY)
    model.test_topk_candidates = 3
    return model


def run(model, topk_by):
    model.test_topk_by = topk_by
    anchors, deltas = anchors_and_deltas()
    result = model.inference_single_image(anchors, SCORES, deltas, IMAGE_SIZE)
    return [
        (s, c, b)
        for s, c, b in zip(
            result.scores.tolist(), result.pred_classes.tolist(), result.pred_boxes.tensor.tolist()
        )
    ]


def assert_same(got, expected):
    assert [c for _, c, _ in got] == [c for _, c, _ in expected]
    torch.testing.assert_close(
        torch.tensor([s for s, _, _ in got]), torch.tensor([s for s, _, _ in expected])
    )
    torch.testing.assert_close(
        torch.tensor([b for _, _, b in got]), torch.tensor([b for _, _, b in expected])
    )


def test_topk_over_pairs(gfl):
    # Level 0: the 3 best (location, class) pairs; level 1 has only 3 candidate pairs.
    picks = [(0, 0, 0), (0, 1, 2), (0, 0, 1), (1, 0, 1), (1, 1, 0), (1, 1, 2)]
    assert_same(run(gfl, "pair"), expected_detections(picks))


def test_topk_over_locations_keeps_every_class_of_the_best_locations(gfl):
    # Level 0: locations 0, 1, 2 (best scores 0.9, 0.85, 0.75) with all their candidates, so
    # location 2 (at the edge, clipped) comes with 3 classes; location 3 (0.1) is dropped.
    picks = [
        (0, 0, 0),
        (0, 0, 1),
        (0, 1, 2),
        (0, 2, 0),
        (0, 2, 1),
        (0, 2, 2),
        (1, 0, 1),
        (1, 1, 0),
        (1, 1, 2),
    ]
    got = run(gfl, "location")
    assert_same(got, expected_detections(picks))
    assert [0.0, 195.0, 7.0, 205.0] in [b for _, _, b in got]  # (-3, 195, 7, 205) clipped


def test_boxes_are_clipped_before_nms(gfl):
    # Two boxes of one class, (380, 100, 420, 200) and (385, 100, 600, 200): IoU 0.16 as
    # predicted, 0.75 > 0.6 once both are clipped at x = 400, so NMS keeps only the better one.
    gfl.test_topk_by = "pair"
    anchors = [Boxes(torch.tensor([[350.0, 100, 450, 200], [350.0, 100, 450, 200]]))]
    deltas = [torch.tensor([[20.0, 50, 20, 50], [15.0, 50, 200, 50]])]
    scores = [torch.tensor([[0.9], [0.8]])]
    result = gfl.inference_single_image(anchors, scores, deltas, IMAGE_SIZE)
    assert result.scores.tolist() == pytest.approx([0.9])
    torch.testing.assert_close(
        result.pred_boxes.tensor, torch.tensor([[380.0, 100.0, 400.0, 200.0]])
    )


def test_bad_topk_unit_names_the_key():
    with pytest.raises(ValueError, match="MODEL.GFL.TOPK_CANDIDATES_TEST_BY.*'pairs'"):
        build_tiny_model(GFL_TINY, "MODEL.GFL.TOPK_CANDIDATES_TEST_BY", "pairs")
