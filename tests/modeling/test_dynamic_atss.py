"""DynamicATSS on the tiny config: combined-IoU assignment on hand-built scenes, schedules,
losses and logging, training steps, inference scores."""

import math
import os

import pytest
import torch
from conftest import CONFIGS, build_tiny_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from modeling.test_atss import TWO_IMAGES, check_trains_without_gt, level_tensors, make_inputs
from modeling.test_atss_assign import grid_anchors

from d2ext.modeling.meta_arch import DynamicATSS
from d2ext.modeling.meta_arch.dynamic_atss import scheduled_pred_weight

DYNAMIC_TINY = os.path.join(CONFIGS, "Synthetic", "dynamic_atss_R_18_FPN_tiny.yaml")


def build(*opts, seed=0):
    return build_tiny_model(DYNAMIC_TINY, *opts, seed=seed)


@pytest.fixture(scope="module")
def model():
    return build()


def instances(boxes):
    inst = Instances((32, 32))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(inst.gt_boxes), dtype=torch.int64)
    return inst


# 16 x 16 anchors on a 4 x 4 grid of stride 8 (centres 4, 12, 20, 28; index = row * 4 + col)
# and one GT (0, 0, 24, 24), centre (12, 12). Its 9 candidates: anchor 5 (centre (12, 12), IoU
# 256/576 = 0.444), the edge neighbours 1, 4, 6, 9 (IoU 192/640 = 0.3) and the corners 0, 2, 8, 10
# (IoU 144/688 = 0.209). Mean 0.2756 + std 0.0779 = threshold 0.3535: ATSS takes anchor 5 only.
SCENE_ANCHORS = [Boxes(grid_anchors(16, 8, 4, 4))]
SCENE_GT = [instances([0, 0, 24, 24])]


def positives(labels):
    return sorted(torch.nonzero(labels != 5).flatten().tolist())


def test_iteration_zero_predictions_equal_to_anchors_give_atss(model):
    # Predicted boxes = anchors: combined IoU = 2 IoU and threshold = 2 (mean + std).
    preds = SCENE_ANCHORS[0].tensor[None]
    with EventStorage() as storage:
        labels, boxes = model.label_anchors_dynamic(SCENE_ANCHORS, preds, SCENE_GT)
        atss_labels, _ = model.label_anchors(SCENE_ANCHORS, SCENE_GT)
        assert storage.history("dynamic_atss/changed_positive_fraction").latest() == 0.0
        assert storage.history("dynamic_atss/positives_per_gt").latest() == 1.0
        # 2 x (mean + std) of the anchor IoUs.
        assert storage.history("dynamic_atss/mean_threshold").latest() == pytest.approx(
            2 * 0.3535, abs=1e-3
        )
    assert positives(labels[0]) == positives(atss_labels[0]) == [5]
    torch.testing.assert_close(boxes[0][5], SCENE_GT[0].gt_boxes.tensor[0])


def test_a_good_prediction_wins_the_assignment(model):
    # Corner anchor 0 predicts the GT exactly (predicted IoU 1): combined IoUs 1.209 (anchor 0),
    # 0.889 (anchor 5), 0.6 (edges), 0.418 (other corners). Predicted-IoU mean 0.3635 + std 0.2498
    # adds 0.613 to the threshold: 0.967. Anchor 0 becomes the positive, anchor 5 drops out.
    preds = SCENE_ANCHORS[0].tensor.clone()
    preds[0] = SCENE_GT[0].gt_boxes.tensor[0]
    with EventStorage() as storage:
        labels, _ = model.label_anchors_dynamic(SCENE_ANCHORS, preds[None], SCENE_GT)
        assert storage.history("dynamic_atss/changed_positive_fraction").latest() == 1.0
        assert storage.history("dynamic_atss/mean_threshold").latest() == pytest.approx(
            0.3535 + 0.613, abs=1e-3
        )
    assert positives(labels[0]) == [0]


def test_prediction_weight_zero_is_plain_atss():
    model = build("MODEL.DYNAMIC_ATSS.CIOU_SCHEDULE", "up")  # w_p = 0 at iteration 0
    preds = SCENE_ANCHORS[0].tensor.clone()
    preds[0] = SCENE_GT[0].gt_boxes.tensor[0]
    with EventStorage(start_iter=0):
        labels, _ = model.label_anchors_dynamic(SCENE_ANCHORS, preds[None], SCENE_GT)
    assert positives(labels[0]) == [5]


def test_schedules_at_chosen_iterations():
    assert scheduled_pred_weight("constant", 1.5, 123, 500) == 1.5
    assert [scheduled_pred_weight("up", 1.0, t, 500) for t in (0, 125, 250, 500, 900)] == [
        0,
        0.25,
        0.5,
        1,
        1,
    ]
    assert [scheduled_pred_weight("down", 2.0, t, 500) for t in (0, 125, 500, 900)] == [
        2.0,
        1.5,
        0,
        0,
    ]
    with pytest.raises(ValueError, match="MODEL.DYNAMIC_ATSS.CIOU_SCHEDULE"):
        scheduled_pred_weight("cosine", 1.0, 0, 10)


def test_model_reads_the_iteration_from_the_event_storage():
    model = build(
        "MODEL.DYNAMIC_ATSS.CIOU_SCHEDULE", "down", "MODEL.DYNAMIC_ATSS.CIOU_SCHEDULE_ITERS", 0
    )
    assert model.ciou_schedule_iters == 500  # 0 = SOLVER.MAX_ITER of the tiny config
    with EventStorage(start_iter=100):
        assert model.current_pred_weight() == pytest.approx(0.8)
    with EventStorage(start_iter=400):
        assert model.current_pred_weight() == pytest.approx(0.2)


def test_bad_keys_are_named():
    with pytest.raises(ValueError, match="MODEL.DYNAMIC_ATSS.CLS_LOSS"):
        build("MODEL.DYNAMIC_ATSS.CLS_LOSS", "focal")
    with pytest.raises(ValueError, match="MODEL.DYNAMIC_ATSS.CIOU_SCHEDULE"):
        build("MODEL.DYNAMIC_ATSS.CIOU_SCHEDULE", "cosine")
    with pytest.raises(ValueError, match="MODEL.DYNAMIC_ATSS.LOSS_NORMALIZER"):
        build("MODEL.DYNAMIC_ATSS.LOSS_NORMALIZER", "mean")


def test_loss_targets_are_the_predicted_iou(model):
    # One image, the scene above (float32, as Boxes are); predictions: anchor 5 predicts (0, 0, 24, 12) (IoU 0.5).
    anchors = SCENE_ANCHORS[0].tensor
    pred_boxes = anchors.clone()[None]
    pred_boxes[0, 5] = torch.tensor([0.0, 0, 24, 12], dtype=torch.float32)
    logits = torch.full((1, 16, 5), -3.0, dtype=torch.float32)
    iou_logits = torch.zeros(1, 16, 1, dtype=torch.float32)
    labels = torch.full((16,), 5)
    labels[5] = 0
    gt = SCENE_GT[0].gt_boxes.tensor[0].expand(16, 4)
    with EventStorage():
        losses = model.losses([logits], pred_boxes, [iou_logits], [labels], [gt])
    q = 0.5
    from d2ext.layers import reference

    y = torch.zeros(16, 5, dtype=torch.float32)
    y[5, 0] = q
    p = torch.sigmoid(logits[0])
    qfl = (
        (y - p) ** 2
        * torch.nn.functional.binary_cross_entropy_with_logits(logits[0], y, reduction="none")
    ).sum()
    torch.testing.assert_close(losses["loss_cls"], qfl)
    # IoU branch: BCE(sigmoid(0), 0.5) = log 2.
    torch.testing.assert_close(losses["loss_iou"], torch.tensor(math.log(2.0), dtype=torch.float32))
    # GIoU weighted by q and normalised by the sum of q: the positive's GIoU loss, 1 - 0.5.
    giou = reference.giou_loss(pred_boxes[0, 5:6], gt[:1], reduction="sum")
    torch.testing.assert_close(giou, torch.tensor(0.5, dtype=torch.float32))
    torch.testing.assert_close(losses["loss_box_reg"], 2.0 * giou)


@pytest.mark.parametrize("cls_loss", ["QFL", "VFL"])
def test_training_step_gives_finite_losses_and_gradients(cls_loss):
    model = build("MODEL.DYNAMIC_ATSS.CLS_LOSS", cls_loss)
    model.train()
    with EventStorage() as storage:
        losses = model(make_inputs(TWO_IMAGES))
        logged = set(storage.histories())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_iou"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert {
        "dynamic_atss/positives_per_gt",
        "dynamic_atss/mean_threshold",
        "dynamic_atss/changed_positive_fraction",
        "dynamic_atss/pred_iou_weight",
    } <= logged
    sum(losses.values()).backward()
    assert model.head.ctrness.weight.grad.abs().sum() > 0  # the IoU branch
    assert model.head.scales.grad.abs().sum() > 0
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def test_image_without_gt_trains(model):
    check_trains_without_gt(model, ["loss_box_reg", "loss_iou"])


def test_saturated_logits_stay_finite(model):
    """The released code's log(sigmoid(x)) gives -inf/NaN here; the fused losses do not."""
    anchors = SCENE_ANCHORS[0].tensor
    logits = torch.full((1, 16, 5), 1e4, dtype=torch.float64, requires_grad=True)
    iou_logits = torch.full((1, 16, 1), -1e4, dtype=torch.float64, requires_grad=True)
    labels = torch.full((16,), 5)
    labels[5] = 0
    gt = SCENE_GT[0].gt_boxes.tensor[0].expand(16, 4)
    with EventStorage():
        losses = model.losses([logits], anchors.clone()[None], [iou_logits], [labels], [gt])
    total = sum(losses.values())
    total.backward()
    assert (
        torch.isfinite(total)
        and torch.isfinite(logits.grad).all()
        and torch.isfinite(iou_logits.grad).all()
    )


def test_inference_score_is_sqrt_of_cls_times_iou(model):
    assert isinstance(model, DynamicATSS)
    model.eval()
    logits, deltas, iou = level_tensors(5, -20.0), level_tensors(4), level_tensors(1)
    logits[0][0, 1, 0, 0] = 3.0
    iou[0][0, 0, 0, 0] = 0.5
    images = type("Images", (), {"image_sizes": [(128, 256)]})()
    (result,) = model.forward_inference(images, level_tensors(64), (logits, deltas, iou))
    expected = math.sqrt(torch.sigmoid(torch.tensor(3.0)) * torch.sigmoid(torch.tensor(0.5)))
    assert len(result) == 1 and result.scores.item() == pytest.approx(expected, rel=1e-5)
    model.train()
