"""The ATSS meta-architecture on the tiny CPU config: shapes, losses, gradients, inference."""

import math

import conftest
import pytest
import torch
from conftest import TINY_CONFIG, make_inputs  # noqa: F401  (make_inputs: used by the other model tests)
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from d2ext.modeling.meta_arch.atss import ATSS, centerness_targets


def tiny_cfg(*opts):
    return conftest.tiny_cfg(TINY_CONFIG, *opts)


TWO_IMAGES = [[[10, 10, 60, 50], [70, 20, 120, 90]], [[5, 5, 20, 30]]]


def training_losses(model, boxes_per_image):
    """One training step on random images with these GT boxes: the losses, after backward
    (gradients zeroed first)."""
    model.train()
    model.zero_grad()
    with EventStorage():
        losses = model(make_inputs(boxes_per_image))
    sum(losses.values()).backward()
    return losses


def check_trains_without_gt(model, box_losses):
    """Images without GT: finite losses, no box losses, the classifier still learns background."""
    losses = training_losses(model, [[], []])
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(losses[k].item() == 0 for k in box_losses)
    assert model.head.cls_score.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def test_registered_and_configured(model):
    assert isinstance(model, ATSS)
    assert model.num_classes == 5 and model.topk == 9 and model.loss_normalizer == "num_pos"
    assert model.backbone.output_shape()["p6"].stride == 64
    # P6 is computed from P5 (METHODS.md §0), through a 64-channel conv.
    assert model.backbone.top_block.in_feature == "p5"
    assert model.backbone.top_block.p6.in_channels == 64


STRIDES = (8, 16, 32, 64, 128)


def level_tensors(channels, value=0.0, size=(128, 256)):
    return [torch.full((1, channels, size[0] // s, size[1] // s), value) for s in STRIDES]


def test_head_output_shapes(model):
    logits, deltas, ctr = model.head(level_tensors(64))
    assert [tuple(x.shape) for x in logits] == [(1, 5, 128 // s, 256 // s) for s in STRIDES]
    assert [x.shape[1] for x in deltas] == [4] * 5 and [x.shape[1] for x in ctr] == [1] * 5


def test_training_step_gives_finite_losses_and_gradients_everywhere(model):
    losses = training_losses(model, TWO_IMAGES)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_centerness"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"] > 0
    assert model.head.cls_score.weight.grad.abs().sum() > 0
    assert model.head.ctrness.weight.grad.abs().sum() > 0
    assert model.head.scales.grad.abs().sum() > 0
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def test_image_without_gt_trains(model):
    check_trains_without_gt(model, ["loss_box_reg", "loss_centerness"])


def test_ema_normalizer_switch():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.ATSS.LOSS_NORMALIZER", "ema"))
    with EventStorage() as storage:
        losses = model(make_inputs([[[10, 10, 60, 50]]]))
        num_pos = storage.history("num_pos_anchors").latest()  # one image
    assert all(torch.isfinite(v) for v in losses.values()) and num_pos >= 1
    # Detectron2's EMA starts at 100 and moves 10% of the way to the positives' count.
    assert model.loss_normalizer_ema == pytest.approx(0.9 * 100 + 0.1 * num_pos)


def test_bad_normalizer_names_the_key():
    with pytest.raises(ValueError, match="MODEL.ATSS.LOSS_NORMALIZER"):
        build_model(tiny_cfg("MODEL.ATSS.LOSS_NORMALIZER", "mean"))


def test_bad_in_features_names_the_key():
    with pytest.raises(ValueError, match="MODEL.ATSS.IN_FEATURES"):
        build_model(tiny_cfg("MODEL.ATSS.IN_FEATURES", ["p3", "p9"]))


def test_inference_output_format(model):
    model.eval()
    batch = make_inputs([[[10, 10, 60, 50]], []])
    batch[1]["height"], batch[1]["width"] = 192, 256  # rescaled to the requested output size
    with torch.no_grad():
        outputs = model(batch)
    assert len(outputs) == 2
    for output, (h, w) in zip(outputs, [(96, 128), (192, 256)]):
        inst = output["instances"]
        assert inst.image_size == (h, w)
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
        assert len(inst) <= model.max_detections_per_image
        assert ((inst.scores > 0) & (inst.scores <= 1)).all()
        assert ((inst.pred_classes >= 0) & (inst.pred_classes < 5)).all()
    model.train()


def test_inference_score_is_sqrt_of_cls_times_centerness(model):
    model.eval()
    # Force one confident location: a large logit for class 2 at the first P3 anchor.
    logits, deltas, ctr = level_tensors(5, -20.0), level_tensors(4), level_tensors(1)
    logits[0][0, 2, 0, 0] = 2.0
    ctr[0][0, 0, 0, 0] = -1.0
    images = type("Images", (), {"image_sizes": [(128, 256)]})()
    (result,) = model.forward_inference(images, level_tensors(64), (logits, deltas, ctr))
    assert len(result) == 1 and result.pred_classes.item() == 2
    expected = math.sqrt(torch.sigmoid(torch.tensor(2.0)) * torch.sigmoid(torch.tensor(-1.0)))
    assert result.scores.item() == pytest.approx(expected, rel=1e-5)
    # Zero deltas decode to the anchor itself: side 8 x stride 8 = 64, centred at (4, 4) (offset
    # 0.5, official ATSS), then clipped to the image before NMS.
    torch.testing.assert_close(result.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 36.0, 36.0]]))
    model.train()


def test_centerness_targets_hand_values():
    # Anchor centred at (4, 4) in GT [0, 0, 8, 16]: l = r = 4, t = 4, b = 12.
    anchors = torch.tensor([[0.0, 0.0, 8.0, 8.0], [2.0, 6.0, 6.0, 10.0]])
    gt = torch.tensor([[0.0, 0.0, 8.0, 16.0], [0.0, 0.0, 8.0, 16.0]])
    expected = torch.tensor([math.sqrt(1.0 * 4 / 12), math.sqrt(1.0 * 8 / 8)])
    torch.testing.assert_close(centerness_targets(anchors, gt), expected)
