"""VFNet on the tiny config: star offsets (checked by sampling a ramp image with deform_conv2d),
the head, VFL / GIoU targets on a hand-built scene, training steps, inference; and the
ATSS + VFL loss-only variant."""

import math
import os

import pytest
import torch
from conftest import CONFIGS, build_tiny_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from modeling.test_atss import STRIDES, level_tensors, make_inputs
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

from d2ext.config import get_cfg
from d2ext.layers import reference
from d2ext.modeling.meta_arch import ATSS, VFNet
from d2ext.modeling.meta_arch.vfnet_head import star_offsets

VFNET_TINY = os.path.join(CONFIGS, "Synthetic", "vfnet_R_18_FPN_tiny.yaml")
ATSS_VFL_TINY = os.path.join(CONFIGS, "Synthetic", "atss_vfl_R_18_FPN_tiny.yaml")


def build(*opts, config=VFNET_TINY, seed=0):
    return build_tiny_model(config, *opts, seed=seed)


@pytest.fixture(scope="module")
def model():
    return build()


def test_registered_and_configured(model):
    assert isinstance(model, VFNet) and model.num_classes == 5
    assert (model.vfl_alpha, model.vfl_gamma, model.vfl_iou_weighted) == (0.75, 2.0, True)
    assert (model.loss_box_init_weight, model.loss_box_refine_weight) == (1.5, 2.0)
    head = model.head
    assert head.strides == [8.0, 16.0, 32.0, 64.0, 128.0]
    assert head.reg_denoms == [64.0, 128.0, 256.0, 512.0, 1024.0] and head.dcn_grad_mul == 0.1
    assert head.cls_dcn.bias is None and head.refine_dcn.bias is None
    # The classifier's prior: sigmoid(bias) = 0.01.
    torch.testing.assert_close(head.cls_score.bias.sigmoid(), torch.full((5,), 0.01))


def test_default_towers_have_three_convs():
    cfg = get_cfg()
    assert cfg.MODEL.VFNET.NUM_CONVS == 3 and cfg.MODEL.VFNET.REG_DENOMS[-1] == 1024


def test_head_output_shapes_and_boxes(model):
    logits, init, refined = model.head(level_tensors(64))
    assert [tuple(x.shape) for x in logits] == [(1, 5, 128 // s, 256 // s) for s in STRIDES]
    assert all(x.shape[1] == 4 and x.dtype == torch.float32 for x in init + refined)
    # A zero input gives bias-only predictions: initial sides exp(0) * reg_denom, factor exp(0).
    for box, denom in zip(init, model.head.reg_denoms):
        torch.testing.assert_close(box, torch.full_like(box, denom))
    for a, b in zip(init, refined):
        torch.testing.assert_close(a, b)


def ramp_sampled_points(offsets, height, width):
    """(9, 2, H, W) (x, y) each 3x3 kernel point of a deformable conv samples, read by convolving
    an image whose two channels are the x and y coordinates with one-hot kernels."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    image = torch.stack([xs, ys])[None]  # (1, 2, H, W)
    weight = torch.zeros(18, 2, 3, 3, dtype=torch.float64)
    for k in range(9):
        weight[2 * k, 0, k // 3, k % 3] = 1.0  # x of point k
        weight[2 * k + 1, 1, k // 3, k % 3] = 1.0  # y of point k
    out = deform_conv2d(image, offsets, weight, padding=(1, 1))
    return out[0].view(9, 2, height, width)


def test_star_offsets_sample_corners_edge_midpoints_and_centre():
    stride, (h, w) = 8.0, (16, 16)
    # Initial box at every location: l 16, t 8, r 24, b 16 px = 2, 1, 3, 2 feature cells.
    boxes = torch.tensor([16.0, 8, 24, 16], dtype=torch.float64).view(1, 4, 1, 1).expand(1, 4, h, w)
    points = ramp_sampled_points(star_offsets(boxes, stride), h, w)
    cy, cx = 6, 5
    expected = []
    for y in (cy - 1, cy, cy + 2):  # top edge, centre row, bottom edge
        for x in (cx - 2, cx, cx + 3):  # left edge, centre column, right edge
            expected.append((x, y))
    torch.testing.assert_close(points[:, :, cy, cx], torch.tensor(expected, dtype=torch.float64))
    # Corners 0, 2, 6, 8 = (x1, y1), (x2, y1), (x1, y2), (x2, y2); centre 4 = the location.
    assert tuple(points[4, :, cy, cx].tolist()) == (cx, cy)


def test_star_offsets_pass_a_tenth_of_the_gradient_to_the_box():
    boxes = torch.rand(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    offsets = star_offsets(boxes, stride=16.0, grad_mul=0.1)
    offsets.sum().backward()
    # Each side appears in 3 sampling points with sign -1 (l, t) or +1 (r, b), divided by the stride.
    expected = torch.tensor([-3.0, -3.0, 3.0, 3.0], dtype=torch.float64) * 0.1 / 16.0
    torch.testing.assert_close(boxes.grad, expected.view(1, 4, 1, 1).expand_as(boxes))
    # The forward value does not depend on the multiplier.
    torch.testing.assert_close(star_offsets(boxes, 16.0, 0.1), star_offsets(boxes, 16.0, 1.0))


def test_dcn_offsets_follow_the_feature_dtype(model):
    head = model.head
    features = [f.to(torch.float64) for f in level_tensors(64, 0.1)]
    head.to(torch.float64)
    try:
        logits, init, refined = head(features)
        assert logits[0].dtype == torch.float64 and torch.isfinite(refined[0]).all()
    finally:
        head.to(torch.float32)


def scene_model():
    """Single-level model: anchors of side 64 at stride 8 (the points are their centres)."""
    model = build()
    model.anchor_generator.strides = [8]
    return model


def test_vfl_and_box_targets_on_a_hand_built_scene():
    model = scene_model()
    # Three points (100, 100), (120, 100), (40, 40); the first two are positives of class 3.
    anchors = [Boxes(torch.tensor([[68.0, 68, 132, 132], [88.0, 68, 152, 132], [8.0, 8, 72, 72]]))]
    gt = torch.tensor([60.0, 80, 180, 300])
    # ltrb from (100, 100) to the GT: 40, 20, 80, 200; from (120, 100): 60, 20, 60, 200.
    init = torch.tensor([[[40.0, 20, 80, 100], [30.0, 20, 60, 200], [8.0, 8, 8, 8]]])
    refined = torch.tensor([[[40.0, 20, 80, 150], [60.0, 20, 60, 200], [8.0, 8, 8, 8]]])
    logits = torch.full((1, 3, 5), -2.0)
    logits[0, 0, 3] = 1.0
    labels = [torch.tensor([3, 3, 5])]
    boxes = [torch.stack([gt, gt, torch.zeros(4)])]
    with EventStorage():
        losses = model.losses(anchors, [logits], [init], [refined], labels, boxes)
    assert set(losses) == {"loss_cls", "loss_box_init", "loss_box_refine"}

    # IoUs with the GT (120 x 220): refined 1: 120 x 170 / (120 x 220); refined 2: exact;
    # initial 1: 120 x 120 / (120 x 220); initial 2: 90 x 220 / (120 x 220).
    q_refined = torch.tensor([170 / 220, 1.0])
    q_init = torch.tensor([120 / 220, 90 / 120])
    y = torch.zeros(3, 5)
    y[0, 3], y[1, 3] = q_refined
    p = torch.sigmoid(logits[0])
    bce = F.binary_cross_entropy_with_logits(logits[0], y, reduction="none")
    vfl = torch.where(y > 0, y * bce, 0.75 * p**2 * bce).sum()
    torch.testing.assert_close(losses["loss_cls"], vfl / 2)  # two positives

    def boxes_from(ltrb, centres=torch.tensor([[100.0, 100], [120.0, 100]])):
        return torch.cat([centres - ltrb[:2, :2], centres + ltrb[:2, 2:]], dim=1)

    giou_init = reference.giou_loss(boxes_from(init[0]), gt.expand(2, 4), reduction="none")
    giou_refined = reference.giou_loss(boxes_from(refined[0]), gt.expand(2, 4), reduction="none")
    assert giou_refined[1].item() == pytest.approx(0.0, abs=1e-6)
    # Weighted by each box's own IoU, normalised by the IoUs' sum (1.32 and 1.77, both >= 1).
    torch.testing.assert_close(
        losses["loss_box_init"], 1.5 * (q_init * giou_init).sum() / q_init.sum()
    )
    torch.testing.assert_close(
        losses["loss_box_refine"], 2.0 * (q_refined * giou_refined).sum() / q_refined.sum()
    )


def test_box_normaliser_is_at_least_one():
    model = scene_model()
    anchors = [Boxes(torch.tensor([[68.0, 68, 132, 132]]))]
    gt = torch.tensor([60.0, 80, 180, 300])
    ltrb = torch.tensor([[[40.0, 20, 80, 100]]])  # IoU 120 / 220 < 1
    with EventStorage():
        losses = model.losses(
            anchors, [torch.zeros(1, 1, 5)], [ltrb], [ltrb], [torch.tensor([3])], [gt[None]]
        )
    giou = reference.giou_loss(torch.tensor([[60.0, 80, 180, 200]]), gt[None], reduction="sum")
    torch.testing.assert_close(losses["loss_box_init"], 1.5 * (120 / 220) * giou)


def test_training_step_gives_finite_losses_and_gradients(model):
    model.train()
    model.zero_grad()
    batch = make_inputs([[[10, 10, 60, 50], [70, 20, 120, 90]], [[5, 5, 20, 30]]])
    with EventStorage() as storage:
        losses = model(batch)
        logged = set(storage.histories())
    assert set(losses) == {"loss_cls", "loss_box_init", "loss_box_refine"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert {"num_pos_anchors", "vfnet/init_iou", "vfnet/refined_iou"} <= logged
    sum(losses.values()).backward()
    head = model.head
    for param in (
        head.cls_score.weight,
        head.cls_dcn.weight,
        head.refine_dcn.weight,
        head.refine_pred.weight,
        head.bbox_pred.weight,
        head.scales,
        head.refine_scales,
        model.backbone.bottom_up.stem.conv1.weight,
    ):
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_refined_loss_reaches_the_initial_box_only_through_the_offsets():
    """refined = factor * stopgrad(initial box): with DCN_GRAD_MUL 0 the refined box's loss does
    not move the initial box at all."""
    model = build("MODEL.VFNET.DCN_GRAD_MUL", 0.0)
    model.train()
    with EventStorage():
        losses = model(make_inputs([[[10, 10, 60, 50]]]))
    losses["loss_box_refine"].backward()
    assert (
        model.head.bbox_pred.weight.grad is None
        or model.head.bbox_pred.weight.grad.abs().sum() == 0
    )
    assert model.head.refine_pred.weight.grad.abs().sum() > 0


def test_image_without_gt_trains(model):
    model.train()
    model.zero_grad()
    with EventStorage():
        losses = model(make_inputs([[], []]))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_init"].item() == 0 and losses["loss_box_refine"].item() == 0
    assert losses["loss_cls"] > 0
    sum(losses.values()).backward()
    assert model.head.cls_score.weight.grad.abs().sum() > 0


def test_inference_scores_are_the_iacs_and_boxes_the_refined_ones(model):
    model.eval()
    logits, init, refined = level_tensors(5, -20.0), level_tensors(4, 8.0), level_tensors(4, 16.0)
    logits[0][0, 2, 1, 2] = 1.5
    images = type("Images", (), {"image_sizes": [(128, 256)]})()
    (result,) = model.forward_inference(images, level_tensors(64), (logits, init, refined))
    model.train()
    assert len(result) == 1 and result.pred_classes.item() == 2
    assert result.scores.item() == pytest.approx(torch.sigmoid(torch.tensor(1.5)).item(), rel=1e-6)
    # The point of P3 cell (row 1, column 2) is (16, 8) (offset 0, official VFNet); refined sides
    # 16 px: (0, -8, 32, 24), clipped to the image before NMS.
    torch.testing.assert_close(result.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 32.0, 24.0]]))


def test_bad_keys_are_named():
    with pytest.raises(ValueError, match="MODEL.VFNET.REG_DENOMS"):
        build("MODEL.VFNET.REG_DENOMS", (64.0, 128.0))
    with pytest.raises(ValueError, match="MODEL.VFNET.DCN_GRAD_MUL"):
        build("MODEL.VFNET.DCN_GRAD_MUL", 1.5)
    with pytest.raises(ValueError, match="MODEL.ATSS.CLS_LOSS"):
        build("MODEL.ATSS.CLS_LOSS", "QFL", config=ATSS_VFL_TINY)


# ATSS + VFL (the VFNet paper's loss-only ablation).


def test_atss_vfl_target_is_the_predicted_iou():
    model = build(config=ATSS_VFL_TINY)
    assert isinstance(model, ATSS) and model.cls_loss == "VFL"
    model.anchor_generator.strides = [8]
    anchors = [Boxes(torch.tensor([[68.0, 68, 132, 132], [8.0, 8, 72, 72]]))]
    gt = torch.tensor([60.0, 80, 180, 300])
    # Zero deltas decode to the anchor (68, 68, 132, 132): IoU with the GT 64 x 52 / (120 x 220 + 64 x 64 - 64 x 52).
    iou = 64 * 52 / (120 * 220 + 64 * 64 - 64 * 52)
    logits = torch.full((1, 2, 5), -1.0)
    with EventStorage():
        losses = model.losses(
            anchors,
            [logits],
            [torch.tensor([3, 5])],
            [torch.zeros(1, 2, 4)],
            [torch.stack([gt, torch.zeros(4)])],
            [torch.zeros(1, 2, 1)],
        )
    y = torch.zeros(2, 5)
    y[0, 3] = iou
    p = torch.sigmoid(logits[0])
    bce = F.binary_cross_entropy_with_logits(logits[0], y, reduction="none")
    torch.testing.assert_close(
        losses["loss_cls"], torch.where(y > 0, y * bce, 0.75 * p**2 * bce).sum()
    )
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_centerness"}


def test_atss_vfl_training_step():
    model = build(config=ATSS_VFL_TINY)
    model.train()
    with EventStorage():
        losses = model(make_inputs([[[10, 10, 60, 50], [70, 20, 120, 90]], []]))
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert math.isfinite(model.head.cls_score.weight.grad.abs().sum().item())
