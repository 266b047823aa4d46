"""GFL v1 / v2 on the tiny configs: head, integral and DGQP statistics on hand-made
distributions, loss targets on a hand-built scene, training steps, inference scores."""

import math
import os

import pytest
import torch
from conftest import CONFIGS, build_tiny_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from modeling.test_atss import (
    STRIDES,
    TWO_IMAGES,
    check_trains_without_gt,
    level_tensors,
    training_losses,
)
from torch.nn import functional as F

from d2ext.layers import logit_of_product, reference
from d2ext.modeling.meta_arch import GFL
from d2ext.modeling.meta_arch.gfl_head import distribution_statistics, integral

GFL_TINY = os.path.join(CONFIGS, "Synthetic", "gfl_R_18_FPN_tiny.yaml")
BINS = 17  # REG_MAX 16


def build(*opts, seed=0):
    return build_tiny_model(GFL_TINY, *opts, seed=seed)


@pytest.fixture(scope="module", params=[False, True], ids=["v1", "v2"])
def model(request):
    return build("MODEL.GFL.DGQP", request.param)


def one_hot_logits(bin_per_side, value=50.0):
    """(1, 4 * 17) logits whose distributions put (all but ~e^-50 of) their mass on one bin."""
    logits = torch.zeros(4, BINS, dtype=torch.float64)
    logits[torch.arange(4), torch.tensor(bin_per_side)] = value
    return logits.flatten()[None]


def test_registered_and_configured(model):
    assert isinstance(model, GFL) and model.reg_max == 16 and model.num_classes == 5
    assert model.head.bbox_pred.out_channels == 4 * BINS and model.head.cls_score.out_channels == 5
    assert not hasattr(model.head, "ctrness")


def test_head_output_shapes(model):
    outputs = model.head(level_tensors(64))
    assert len(outputs) == (3 if model.uses_dgqp else 2)
    assert [tuple(x.shape) for x in outputs[0]] == [(1, 5, 128 // s, 256 // s) for s in STRIDES]
    assert all(x.shape[1] == 4 * BINS and x.dtype == torch.float32 for x in outputs[1])
    if model.uses_dgqp:
        assert [tuple(x.shape) for x in outputs[2]] == [(1, 1, 128 // s, 256 // s) for s in STRIDES]


def test_integral_is_the_mean_bin():
    torch.testing.assert_close(
        integral(one_hot_logits([0, 3, 16, 7])),
        torch.tensor([[0.0, 3, 16, 7]], dtype=torch.float64),
    )
    # Two equally likely bins 2 and 3 -> 2.5; uniform over 0..16 -> 8.
    two = torch.full((4, BINS), -1e4, dtype=torch.float64)
    two[:, 2:4] = 0.0
    uniform = torch.zeros(1, 4 * BINS, dtype=torch.float64)
    torch.testing.assert_close(
        integral(two.flatten()[None]), torch.full((1, 4), 2.5, dtype=torch.float64)
    )
    torch.testing.assert_close(integral(uniform), torch.full((1, 4), 8.0, dtype=torch.float64))


def test_dgqp_statistics_on_a_hand_made_distribution():
    # Side probabilities: left 0.5/0.3/0.2 on bins 4, 5, 6; the other sides uniform (1/17).
    probs = torch.full((4, BINS), 1.0 / BINS, dtype=torch.float64)
    probs[0] = 0.0
    probs[0, 4:7] = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    logits = probs.clamp(min=1e-300).log().reshape(1, 4 * BINS, 1, 1)
    stats = distribution_statistics(logits, topk=4, add_mean=True)[0, :, 0, 0]
    expected_left = [0.5, 0.3, 0.2, 0.0, 0.25]
    expected_other = [1 / BINS] * 5
    torch.testing.assert_close(
        stats, torch.tensor(expected_left + expected_other * 3, dtype=torch.float64)
    )
    assert distribution_statistics(logits, topk=2, add_mean=False).shape == (1, 8, 1, 1)


def test_dgqp_topk_is_checked():
    with pytest.raises(ValueError, match="MODEL.GFL.DGQP_TOPK"):
        build("MODEL.GFL.DGQP", True, "MODEL.GFL.DGQP_TOPK", 18)


def test_logit_of_product_is_exact_and_finite():
    x = torch.tensor([-1e4, -30.0, -3.0, 0.0, 0.7, 20.0, 1e4], dtype=torch.float64)
    a, b = torch.meshgrid(x, x, indexing="ij")
    z = logit_of_product(a, b)
    assert torch.isfinite(z).all()
    p = torch.sigmoid(a) * torch.sigmoid(b)
    # Exact except where p is within 1e-7 of 1 (capped there so the logit stays finite).
    torch.testing.assert_close(torch.sigmoid(z), p, atol=1.1e-7, rtol=1e-12)
    small = (p < 0.5) & (p > 0)  # p underflows to 0 at logit -1e4, where z stays finite
    torch.testing.assert_close(
        z[small], torch.log(p[small]) - torch.log1p(-p[small]), rtol=1e-9, atol=1e-12
    )
    a2 = (torch.randn(6, 3, dtype=torch.float64) * 4).requires_grad_()
    b2 = (torch.randn(6, 1, dtype=torch.float64) * 4).requires_grad_()
    assert torch.autograd.gradcheck(logit_of_product, (a2, b2))


def test_qfl_on_the_product_is_qfl_on_probabilities():
    """GFL v2's pitfall: QFL must see sigmoid(cls) * sigmoid(q) as a probability."""
    g = torch.Generator().manual_seed(0)
    cls_logits = torch.randn(20, 5, generator=g, dtype=torch.float64) * 3
    q_logits = torch.randn(20, 1, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 6, (20,), generator=g)
    scores = torch.rand(20, generator=g, dtype=torch.float64)
    from d2ext.layers import quality_focal_loss

    ours = quality_focal_loss(
        logit_of_product(cls_logits, q_logits), labels, scores, beta=2.0, reduction="sum"
    )
    # The probability-space formula, written out: |y - p|^2 * BCE(p, y).
    p = torch.sigmoid(cls_logits) * torch.sigmoid(q_logits)
    y = torch.zeros_like(p)
    pos = labels < 5
    y[pos, labels[pos]] = scores[pos]
    expected = ((y - p).abs() ** 2 * F.binary_cross_entropy(p, y, reduction="none")).sum()
    torch.testing.assert_close(ours, expected)


def scene_model(*opts):
    """v1 model with a single-level, single-image scene: anchors of side 64 at stride 8."""
    model = build(*opts)
    model.anchor_generator.strides = [8]
    return model


def test_gfl_v1_tiny_config_follows_the_gfl_v1_repo():
    model = build()
    assert model.quality_iou_plus_one and model.loc_weight_sum_min == 0.0
    v2 = build_tiny_model(os.path.join(CONFIGS, "Synthetic", "gflv2_R_18_FPN_tiny.yaml"))
    assert v2.uses_dgqp and not v2.quality_iou_plus_one and v2.loc_weight_sum_min == 0.0


# (QUALITY_IOU_PLUS_ONE, LOC_WEIGHT_SUM_MIN): the GFL v1 repo, the GFL v2 repo, mmdetection.
GFL_REFERENCES = {"gfl_v1_repo": (True, 0.0), "gfl_v2_repo": (False, 0.0), "mmdet": (False, 1.0)}


@pytest.mark.parametrize("reference_name", GFL_REFERENCES)
def test_loss_targets_on_a_hand_built_scene(reference_name):
    plus_one, weight_sum_min = GFL_REFERENCES[reference_name]
    model = scene_model(
        "MODEL.GFL.QUALITY_IOU_PLUS_ONE", plus_one, "MODEL.GFL.LOC_WEIGHT_SUM_MIN", weight_sum_min
    )
    # Two anchors centred at (100, 100) and (40, 40); the first is positive for a GT of class 3.
    anchors = [Boxes(torch.tensor([[68.0, 68, 132, 132], [8.0, 8, 72, 72]], dtype=torch.float64))]
    gt = torch.tensor([60.0, 80, 180, 300], dtype=torch.float64)
    # Predicted distances (bins): l 5, t 2, r 10, b 16 -> box (60, 84, 180, 228) in pixels.
    dist = torch.cat([one_hot_logits([5, 2, 10, 16]), one_hot_logits([1, 1, 1, 1])])
    logits = torch.full((1, 2, 5), -2.0, dtype=torch.float64)
    logits[0, 0, 3] = 1.0
    labels = [torch.tensor([3, 5])]
    boxes = [torch.stack([gt, torch.zeros(4, dtype=torch.float64)])]
    with EventStorage():
        losses = model.losses(anchors, [logits], [dist[None]], labels, boxes)

    pred_box = torch.tensor(
        [[100.0 - 5 * 8, 100 - 2 * 8, 100 + 10 * 8, 100 + 16 * 8]], dtype=torch.float64
    )
    # IoU of (60, 84, 180, 228) with (60, 80, 180, 300): 120 * 144 / (120 * 220).
    quality = 144.0 / 220
    torch.testing.assert_close(
        reference.aligned_iou(pred_box, gt[None]), torch.tensor([quality], dtype=torch.float64)
    )
    if plus_one:
        # In strides, (7.5, 10.5, 22.5, 28.5) vs (7.5, 10, 22.5, 37.5) with widths x2 - x1 + 1:
        # overlap 16 * 19, areas 16 * 19 and 16 * 28.5.
        quality = 19.0 / 28.5
    y = torch.zeros(2, 5, dtype=torch.float64)
    y[0, 3] = quality
    p = torch.sigmoid(logits[0])
    qfl = ((y - p) ** 2 * F.binary_cross_entropy_with_logits(logits[0], y, reduction="none")).sum()
    torch.testing.assert_close(losses["loss_cls"], qfl / 1)  # one positive

    weight = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64))  # best class score, detached
    weight_sum = max(weight.item(), weight_sum_min)  # 0.73: only mmdetection's clamp at 1 acts
    giou = reference.giou_loss(pred_box, gt[None], reduction="sum")
    torch.testing.assert_close(losses["loss_box_reg"], 2.0 * weight * giou / weight_sum)

    # DFL targets: (40, 20, 80, 200) px / 8 = (5, 2.5, 10, 25 -> clamped to 15.9) bins.
    targets = model.dfl_targets(
        anchors[0].tensor[:1], gt[None], torch.tensor([8.0], dtype=torch.float64)
    )
    torch.testing.assert_close(targets, torch.tensor([[5.0, 2.5, 10.0, 15.9]], dtype=torch.float64))
    log_p = F.log_softmax(dist[0].view(4, BINS), dim=-1)
    dfl = 0.0
    for side, t in enumerate([5.0, 2.5, 10.0, 15.9]):
        lo = int(math.floor(t))
        dfl -= (lo + 1 - t) * log_p[side, lo] + (t - lo) * log_p[side, lo + 1]
    torch.testing.assert_close(losses["loss_dfl"], 0.25 * weight * dfl / 4 / weight_sum)


def test_training_step_gives_finite_losses_and_gradients(model):
    losses = training_losses(model, TWO_IMAGES)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_dfl"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert model.head.bbox_pred.weight.grad.abs().sum() > 0
    assert model.head.scales.grad.abs().sum() > 0
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    if model.uses_dgqp:
        assert model.head.dgqp.conv2.weight.grad.abs().sum() > 0


def test_image_without_gt_trains(model):
    check_trains_without_gt(model, ["loss_box_reg", "loss_dfl"])


def test_inference_score_and_box(model):
    model.eval()
    logits, dist = level_tensors(5, -20.0), level_tensors(4 * BINS)
    logits[0][0, 2, 0, 0] = 2.0
    # Location (0, 0) of P3: distances l, t, r, b = 1, 2, 3, 4 bins (x 8 px).
    for side, b in enumerate([1, 2, 3, 4]):
        dist[0][0, side * BINS + b, 0, 0] = 60.0
    predictions = [logits, dist]
    expected = torch.sigmoid(torch.tensor(2.0))
    if model.uses_dgqp:
        quality = level_tensors(1, 0.0)
        quality[0][0, 0, 0, 0] = -1.0
        predictions.append(quality)
        expected = expected * torch.sigmoid(torch.tensor(-1.0))
    images = type("Images", (), {"image_sizes": [(128, 256)]})()
    (result,) = model.forward_inference(images, level_tensors(64), predictions)
    assert len(result) == 1 and result.pred_classes.item() == 2
    assert result.scores.item() == pytest.approx(expected.item(), rel=1e-5)
    # Anchor centre (0, 0) (offset 0, as mmdetection / the GFL v2 repo): box (-8, -16, 24, 32),
    # clipped to the image before NMS.
    torch.testing.assert_close(result.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 24.0, 32.0]]))
    model.train()
