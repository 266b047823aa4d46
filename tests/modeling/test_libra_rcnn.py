"""Libra R-CNN on the tiny CPU config: registration, one training step, empty GT, ablations."""

import os

import conftest
import pytest
import torch
from conftest import CONFIGS
from detectron2.modeling import FPN, build_model
from detectron2.utils.events import EventStorage

from d2ext.modeling import (
    BalancedFeaturePyramid,
    LibraFastRCNNOutputLayers,
    LibraROIHeads,
    LibraRPN,
)

LIBRA_TINY = os.path.join(CONFIGS, "Synthetic", "libra_faster_rcnn_R_18_FPN_tiny.yaml")
LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
# Every Libra piece off: must be Detectron2's Faster R-CNN in all but class names.
ALL_OFF = [
    "MODEL.BACKBONE.NAME",
    "build_resnet_any_width_fpn_backbone",
    "MODEL.LIBRA.IOU_BALANCED_NEG",
    "False",
    "MODEL.LIBRA.INSTANCE_BALANCED_POS",
    "False",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE",
    "smooth_l1",
    "MODEL.LIBRA.RPN_NEG_POS_UB",
    "-1",
]


def tiny_cfg(*opts):
    return conftest.tiny_cfg(LIBRA_TINY, *opts)


def make_inputs(boxes_per_image, size=(128, 160), seed=0):
    return conftest.make_inputs(boxes_per_image, size, seed)


BOXES = [[[10, 10, 60, 50], [70, 20, 150, 110], [20, 60, 44, 84]], [[5, 5, 20, 30]]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def test_tiny_config_builds_every_libra_piece(model):
    assert isinstance(model.backbone, BalancedFeaturePyramid) and isinstance(
        model.backbone.fpn, FPN
    )
    assert model.backbone.level_names == ["p2", "p3", "p4", "p5", "p6"]
    assert model.backbone.level_names[model.backbone.refine_level] == "p4"
    assert (
        isinstance(model.proposal_generator, LibraRPN) and model.proposal_generator.neg_pos_ub == 5
    )
    heads = model.roi_heads
    assert (
        isinstance(heads, LibraROIHeads) and heads.iou_balanced_neg and heads.instance_balanced_pos
    )
    assert heads.num_iou_bins == 3 and heads.floor_thresh == 0.0  # mmdet trains with tau = 0
    assert isinstance(heads.box_predictor, LibraFastRCNNOutputLayers)
    assert heads.box_predictor.box_reg_loss_type == "balanced_l1"
    assert (heads.box_predictor.balanced_l1_alpha, heads.box_predictor.balanced_l1_gamma) == (
        0.5,
        1.5,
    )


def test_training_step_finite_losses_gradients_reach_bfp_and_stats_logged(model):
    model.train()
    model.zero_grad()
    with EventStorage() as storage:
        losses = model(make_inputs(BOXES))
        history = storage.histories()
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"] > 0
    sum(losses.values()).backward()
    refine = model.backbone.refine
    assert (
        refine.conv_out.weight.grad.abs().sum() > 0
    )  # zero-initialised, so only this one at step 0
    assert model.backbone.fpn.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0
    stats = {k: history[k].latest() for k in history if k.startswith("roi_head/")}
    per_bin = [stats[f"roi_head/num_neg_iou_bin{k}"] for k in range(3)]
    # 64 RoIs per image (16 positives at most); the bins count sampled negatives.
    assert stats["roi_head/num_fg_samples"] + stats["roi_head/num_bg_samples"] == 64
    assert sum(per_bin) == pytest.approx(stats["roi_head/num_bg_samples"])
    assert per_bin[2] == 0  # negatives have IoU < 0.5 < 2/3
    assert 1 <= stats["roi_head/num_gt_with_pos_samples"] <= 2
    # Once the output conv has moved (one SGD step on it), the non-local's inner convs learn too.
    with torch.no_grad():
        refine.conv_out.weight -= 0.1 * refine.conv_out.weight.grad
    model.zero_grad()
    with EventStorage():
        sum(model(make_inputs(BOXES, seed=1)).values()).backward()
    assert (
        float(refine.g.weight.grad.abs().sum()) > 0
        and float(refine.theta.weight.grad.abs().sum()) > 0
    )


def test_images_without_gt_train(model):
    model.train()
    model.zero_grad()
    with EventStorage():
        losses = model(make_inputs([[], []]))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"].item() == 0 and losses["loss_rpn_loc"].item() == 0
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    # One image with GT, one without, in the same batch.
    with EventStorage():
        losses = model(make_inputs([BOXES[0], []]))
    assert all(torch.isfinite(v) for v in losses.values())


def test_every_piece_switches_off():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(*ALL_OFF))
    # A plain FPN (d2ext's subclass of Detectron2's, with its padding option), no BFP around it.
    assert isinstance(model.backbone, FPN) and not isinstance(
        model.backbone, BalancedFeaturePyramid
    )
    assert model.proposal_generator.neg_pos_ub == -1
    heads = model.roi_heads
    assert not heads.iou_balanced_neg and not heads.instance_balanced_pos
    assert heads.box_predictor.box_reg_loss_type == "smooth_l1"
    model.train()
    with EventStorage() as storage:
        losses = model(make_inputs(BOXES))
        # The bin statistics are logged with random sampling too, for comparison.
        assert "roi_head/num_neg_iou_bin0" in storage.histories()
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())


def test_rpn_negatives_bounded_per_positive(model):
    rpn = model.proposal_generator
    label = torch.cat([torch.ones(3), torch.zeros(500), -torch.ones(10)])
    sampled = rpn._subsample_labels(label.clone())
    assert int((sampled == 1).sum()) == 3 and int((sampled == 0).sum()) == 15
    rpn.neg_pos_ub = -1
    try:
        sampled = rpn._subsample_labels(label.clone())
        assert int((sampled == 0).sum()) == rpn.batch_size_per_image - 3
    finally:
        rpn.neg_pos_ub = 5


def test_rpn_losses_divided_by_the_sampled_anchors(model):
    # METHODS.md Errata 9: with neg_pos_ub mmdet divides both RPN losses by the anchors sampled
    # (per image max(#pos, 1) + max(#neg, 1)), not Detectron2's batch_size_per_image x N.
    from detectron2.structures import Boxes

    rpn = model.proposal_generator
    anchors = torch.tensor(
        [[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 40.0, 24.0], [0.0, 0.0, 32.0, 32.0]] * 10
    )
    # Image 0: 2 positives + 10 negatives; image 1: no positive, 5 negatives (counted 1 + 5).
    labels = [torch.tensor([1, 1] + [0] * 10 + [-1] * 18), torch.tensor([0] * 5 + [-1] * 25)]
    gt_boxes = [anchors + torch.tensor([2.0, -1.0, 4.0, 3.0]), anchors.clone()]
    logits = torch.linspace(-2.0, 3.0, 60).view(2, 30)
    deltas = torch.zeros(2, 30, 4)
    with EventStorage():
        losses = rpn.losses([Boxes(anchors)], [logits], labels, [deltas], gt_boxes)
    # By hand: BCE over the sampled anchors, smooth L1 (beta = rpn.smooth_l1_beta) of the
    # positives' target deltas (the prediction is 0).
    y = torch.stack(labels).float()
    valid = y >= 0
    bce = (torch.nn.functional.softplus(logits) - y * logits)[valid].sum()
    target = rpn.box2box_transform.get_deltas(anchors[:2], gt_boxes[0][:2]).abs()
    beta = rpn.smooth_l1_beta
    box = (
        target - 0.5 * beta
        if beta < 1e-5
        else torch.where(target < beta, 0.5 * target**2 / beta, target - 0.5 * beta)
    ).sum()
    assert box > 0
    num_sampled = (2 + 10) + (1 + 5)
    torch.testing.assert_close(losses["loss_rpn_cls"], bce / num_sampled)
    torch.testing.assert_close(losses["loss_rpn_loc"], box / num_sampled)
    assert num_sampled < rpn.batch_size_per_image * 2  # Detectron2's normaliser would be 256
    assert not torch.allclose(losses["loss_rpn_cls"], bce / (rpn.batch_size_per_image * 2))
    # Without the bound: Detectron2's RPN, normaliser batch_size_per_image x N.
    rpn.neg_pos_ub = -1
    try:
        with EventStorage():
            losses = rpn.losses([Boxes(anchors)], [logits], labels, [deltas], gt_boxes)
        torch.testing.assert_close(losses["loss_rpn_cls"], bce / (rpn.batch_size_per_image * 2))
    finally:
        rpn.neg_pos_ub = 5


def test_bad_config_values_name_the_key():
    with pytest.raises(ValueError, match="MODEL.LIBRA.NUM_IOU_BINS"):
        build_model(tiny_cfg("MODEL.LIBRA.NUM_IOU_BINS", "0"))
    with pytest.raises(ValueError, match=r"MODEL.LIBRA.FLOOR_THRESH.*-0.5"):
        build_model(tiny_cfg("MODEL.LIBRA.FLOOR_THRESH", "-0.5"))
    with pytest.raises(ValueError, match=r"MODEL.LIBRA.RPN_NEG_POS_UB.*-2"):
        build_model(tiny_cfg("MODEL.LIBRA.RPN_NEG_POS_UB", "-2"))
    with pytest.raises(ValueError, match="MODEL.LIBRA.BFP_REFINE_TYPE"):
        build_model(tiny_cfg("MODEL.LIBRA.BFP_REFINE_TYPE", "gc"))
    with pytest.raises(ValueError, match="MODEL.LIBRA.BFP_BASE_BACKBONE"):
        build_model(tiny_cfg("MODEL.LIBRA.BFP_BASE_BACKBONE", "build_resnet_fpn_bfp_backbone"))


def test_inference_output_format(model):
    model.eval()
    with torch.no_grad():
        (output,) = model(make_inputs([[]]))
    inst = output["instances"]
    assert inst.image_size == (128, 160) and set(inst.get_fields()) == {
        "pred_boxes",
        "scores",
        "pred_classes",
    }
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < 5)).all()
    model.train()
