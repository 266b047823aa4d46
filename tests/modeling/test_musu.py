"""MuSu (a reconstruction, METHODS.md §5.2): bags, mutual rankings and rank weights on a
hand-built scene with known scores and IoUs (direct and mixed forms), the warm start switch,
training steps (also with two anchors per location), the empty-GT image and inference."""

import os

import pytest
import torch
from conftest import CONFIGS, build_tiny_model
from detectron2.utils.events import EventStorage
from modeling.test_atss import level_tensors, make_inputs
from torch.nn import functional as F

from d2ext.modeling.assigners.musu import mixed_keys, mutual_bags, rank_to_weight
from d2ext.modeling.meta_arch import MuSu

MUSU_TINY = os.path.join(CONFIGS, "Synthetic", "musu_R_18_FPN_tiny.yaml")

# One level of six 10 x 10 anchors centred at x = 5, 15, ..., 55 (y = 5).
ANCHORS = torch.tensor([[10.0 * i, 0, 10.0 * i + 10, 10] for i in range(6)])
GT = torch.tensor([[0.0, 0, 40, 10]])  # centre (20, 5): the 4 nearest anchors are 0-3
S = torch.tensor([0.9, 0.2, 0.6, 0.4, 0.9, 0.9])[:, None]  # probability of the GT's class
U = torch.tensor([0.3, 0.8, 0.5, 0.7, 0.9, 0.9])[:, None]  # IoU of the predicted box
ANCHOR_IOU = torch.full((6, 1), 0.25)


def bags(mix_lambda, gate_thresh=0.45, **kwargs):
    # Gate sqrt(s u): anchors 0, 2, 3 pass 0.45 (0.52, 0.55, 0.53), anchor 1 (0.40) does not;
    # anchors 4, 5 are not among the 4 nearest candidates.
    args = dict(topk=4, gate_thresh=gate_thresh, gate_shape=0.5, mix_lambda=mix_lambda, rank_topk=3)
    args.update(kwargs)
    return mutual_bags(ANCHORS, [6], GT, S, U, ANCHOR_IOU, **args)


def test_direct_form_ranks_regression_by_score_and_classification_by_iou():
    out = bags(0.0)
    assert out.matched_idxs.tolist() == [0, -1, 0, 0, -1, -1] and out.bag_sizes.tolist() == [3]
    # Regression by s: 0 (0.9), 2 (0.6), 3 (0.4); classification by u: 3 (0.7), 2 (0.5), 0 (0.3).
    # Linear weights 1 - rank / 3.
    torch.testing.assert_close(out.reg_weights, torch.tensor([1.0, 0, 2 / 3, 1 / 3, 0, 0]))
    torch.testing.assert_close(out.cls_weights, torch.tensor([1 / 3, 0, 2 / 3, 1.0, 0, 0]))
    assert out.top_agree.tolist() == [False]


def test_symmetric_mixed_form_at_one_half_agrees():
    # lambda = 0.5: both keys are sqrt(s u): 2 (0.548), 3 (0.529), 0 (0.520) for both heads.
    out = bags(0.5)
    expected = torch.tensor([1 / 3, 0, 1.0, 2 / 3, 0, 0])
    torch.testing.assert_close(out.reg_weights, expected)
    torch.testing.assert_close(out.cls_weights, expected)
    assert out.top_agree.tolist() == [True]


def test_mixed_keys_hand_values():
    reg, cls = mixed_keys(torch.tensor([0.64]), torch.tensor([0.25]), 0.5)
    torch.testing.assert_close(reg, torch.tensor([0.4]))
    torch.testing.assert_close(cls, torch.tensor([0.4]))
    reg, cls = mixed_keys(torch.tensor([0.64]), torch.tensor([0.25]), 0.0)
    torch.testing.assert_close(reg, torch.tensor([0.64]))
    torch.testing.assert_close(cls, torch.tensor([0.25]))


def test_best_candidate_always_enters_the_bag():
    out = bags(0.0, gate_thresh=1.0)
    # Only anchor 2 (highest gate 0.548) is in the bag, weight 1 for both heads.
    assert out.matched_idxs.tolist() == [-1, -1, 0, -1, -1, -1]
    torch.testing.assert_close(out.reg_weights, torch.tensor([0.0, 0, 1, 0, 0, 0]))
    torch.testing.assert_close(out.cls_weights, out.reg_weights)


def test_exp_rank_weights():
    out = bags(0.0, rank_weight="exp", rank_tau=2.0)
    e = torch.exp(torch.tensor([0.0, -0.5, -1.0]))
    torch.testing.assert_close(
        out.reg_weights,
        torch.stack([e[0], torch.tensor(0.0), e[1], e[2], torch.tensor(0.0), torch.tensor(0.0)]),
    )
    torch.testing.assert_close(
        rank_to_weight(torch.tensor([0, 4, 12]), "linear", 9, 1.0), torch.tensor([1.0, 5 / 9, 0.0])
    )
    with pytest.raises(ValueError, match="MODEL.MUSU.RANK_WEIGHT"):
        rank_to_weight(torch.tensor([0]), "cosine", 9, 1.0)


def test_an_anchor_in_two_bags_goes_to_the_larger_anchor_iou():
    gts = torch.tensor([[0.0, 0, 40, 10], [20.0, 0, 60, 10]])  # nearest 4 of the second: 2-5
    s = torch.cat([S, S], dim=1)
    u = torch.cat([U, U], dim=1)
    anchor_iou = torch.tensor(
        [[0.25, 0.0], [0.25, 0.0], [0.2, 0.3], [0.3, 0.2], [0.0, 0.25], [0.0, 0.25]]
    )
    out = mutual_bags(
        ANCHORS, [6], gts, s, u, anchor_iou, topk=4, gate_thresh=0.0, mix_lambda=0.0, rank_topk=3
    )
    assert out.matched_idxs.tolist() == [0, 0, 1, 0, 1, 1]
    assert out.bag_sizes.tolist() == [3, 3]
    # GT 0 keeps 0, 1, 3: by s 0 (0.9), 3 (0.4), 1 (0.2); GT 1 keeps 2, 4, 5: s 0.6, 0.9, 0.9.
    torch.testing.assert_close(
        out.reg_weights, torch.tensor([1.0, 1 / 3, 1 / 3, 2 / 3, 1.0, 2 / 3])
    )


def test_no_gt_gives_no_bags():
    out = mutual_bags(
        ANCHORS, [6], torch.zeros(0, 4), S[:, :0], U[:, :0], ANCHOR_IOU[:, :0], topk=4
    )
    assert (out.matched_idxs == -1).all() and out.reg_weights.sum() == 0 and len(out.bag_sizes) == 0


def build(*opts, seed=0):
    return build_tiny_model(MUSU_TINY, *opts, seed=seed)


@pytest.fixture(scope="module")
def model():
    return build()


def test_registered_and_configured(model):
    assert isinstance(model, MuSu) and model.mix_lambda == 0.2 and model.warmup_iters == 100
    assert model.num_anchors_per_location == 1 and not hasattr(model.head, "ctrness")


def test_warm_start_switches_at_the_configured_iteration():
    model = build("MODEL.MUSU.WARMUP_ITERS", 5)
    anchors = model.anchor_generator([t[:, :1] for t in level_tensors(1)])
    gt = make_inputs([[[10, 10, 60, 50]]])[0]["instances"]
    num_anchors = sum(len(a) for a in anchors)
    pred_boxes = torch.cat([a.tensor for a in anchors])[None]

    def weights(iteration, seed):
        logits = torch.randn(1, num_anchors, 5, generator=torch.Generator().manual_seed(seed)) * 3
        with EventStorage(start_iter=iteration) as storage:
            out = model.label_anchors_mutual(anchors, logits, pred_boxes, [gt])
            warm = storage.history("musu/warm_start").latest()
        return out[2], out[3], warm

    reg_a, cls_a, warm = weights(4, seed=1)
    reg_b, cls_b, _ = weights(4, seed=2)
    # Warm: anchor IoUs only, so the logits do not matter and both heads rank alike.
    assert warm == 1.0
    torch.testing.assert_close(reg_a, reg_b)
    torch.testing.assert_close(reg_a, cls_a)
    reg_c, _, warm = weights(5, seed=1)
    reg_d, _, _ = weights(5, seed=2)
    assert warm == 0.0 and not torch.equal(reg_c, reg_d)


def test_training_step_gives_finite_losses_and_gradients(model):
    model.train()
    model.zero_grad()
    batch = make_inputs([[[10, 10, 60, 50], [70, 20, 120, 90]], [[5, 5, 20, 30]]])
    with EventStorage(start_iter=200) as storage:  # after the warm start
        losses = model(batch)
        logged = set(storage.histories())
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert {
        "musu/bag_size",
        "musu/reg_samples",
        "musu/cls_samples",
        "musu/top_agreement",
        "musu/warm_start",
    } <= logged
    sum(losses.values()).backward()
    assert model.head.scales.grad.abs().sum() > 0
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def test_two_anchors_per_location_train():
    sizes = [[64 * 2**i, 64 * 2**i * 2**0.5] for i in range(5)]
    model = build("MODEL.ANCHOR_GENERATOR.SIZES", sizes, "MODEL.MUSU.CLS_LOSS", "VFL")
    assert model.num_anchors_per_location == 2 and model.head.cls_score.out_channels == 10
    with EventStorage(start_iter=200):
        losses = model(make_inputs([[[10, 10, 60, 50]]]))
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


def test_image_without_gt_trains(model):
    model.train()
    model.zero_grad()
    with EventStorage(start_iter=200):
        losses = model(make_inputs([[], []]))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"].item() == 0 and losses["loss_cls"] > 0
    sum(losses.values()).backward()
    assert model.head.cls_score.weight.grad.abs().sum() > 0


def test_loss_uses_weighted_soft_targets(model):
    # Two anchors in one bag: cls weights 1 and 0.5, reg weights 0.5 and 1; predicted IoUs 1 and 0.5.
    gt = torch.tensor([0.0, 0, 20, 20])
    pred = torch.tensor([[[0.0, 0, 20, 20], [0.0, 0, 20, 10], [50.0, 50, 60, 60]]])
    logits = torch.zeros(1, 3, 5)
    labels = torch.tensor([[2, 2, 5]])
    boxes = gt.expand(1, 3, 4)
    with EventStorage():
        losses = model.losses(
            logits,
            pred,
            labels,
            boxes,
            torch.tensor([[0.5, 1.0, 0.0]]),
            torch.tensor([[1.0, 0.5, 0.0]]),
        )
    y = torch.zeros(3, 5)
    y[0, 2], y[1, 2] = 1.0, 0.25
    p = torch.sigmoid(logits[0])
    qfl = ((y - p) ** 2 * F.binary_cross_entropy_with_logits(logits[0], y, reduction="none")).sum()
    torch.testing.assert_close(losses["loss_cls"], qfl / 1.5)
    # GIoU: 0 for the exact box, 1 - 0.5 for the half box; weights 0.5, 1 over their sum 1.5.
    torch.testing.assert_close(losses["loss_box_reg"], torch.tensor(2.0 * 0.5 / 1.5))


def test_bad_keys_are_named():
    for key, value in (
        ("CLS_LOSS", "FL"),
        ("RANK_WEIGHT", "cosine"),
        ("MIX_LAMBDA", 1.5),
        ("RANK_TOPK", 0),
    ):
        with pytest.raises(ValueError, match=f"MODEL.MUSU.{key}"):
            build(f"MODEL.MUSU.{key}", value)


def test_inference_score_is_sigmoid_cls(model):
    model.eval()
    logits, deltas = level_tensors(5, -20.0), level_tensors(4)
    logits[0][0, 4, 0, 1] = 0.5
    images = type("Images", (), {"image_sizes": [(128, 256)]})()
    (result,) = model.forward_inference(images, level_tensors(64), (logits, deltas))
    model.train()
    assert len(result) == 1 and result.pred_classes.item() == 4
    assert result.scores.item() == pytest.approx(torch.sigmoid(torch.tensor(0.5)).item(), rel=1e-6)
    # Anchor of P3 cell (0, 1) centred at (12, 4) (offset 0.5, as ATSS): (-20, -28, 44, 36),
    # clipped to the image before NMS.
    torch.testing.assert_close(result.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 44.0, 36.0]]))
