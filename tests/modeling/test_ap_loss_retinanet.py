"""APLossRetinaNet: configuration, the AP-loss path against hand values and the O(P*N)
reference, ranking modes (minibatch, per image, across processes), training and inference."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from conftest import CONFIGS, make_inputs
from detectron2.layers import cat
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from d2ext.config import get_cfg
from d2ext.layers import reference
from d2ext.modeling.meta_arch.ap_loss_retinanet import APLossRetinaNet, ranking_counts

TINY = os.path.join(CONFIGS, "Synthetic", "aploss_retinanet_R_18_FPN_tiny.yaml")
PAPER = os.path.join(CONFIGS, "APLoss", "aploss_retinanet_R_50_FPN_100e_512.yaml")


def make_cfg(path=TINY, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(make_cfg())


def ranking_grad(model, logits, labels):
    """(loss, d loss / d logits) of the model's ranking loss on (N, R, K) logits."""
    x = logits.detach().clone().requires_grad_(True)
    with EventStorage() as storage:
        loss = model.ranking_loss(x, labels)
    loss.backward()
    return loss.detach(), x.grad, storage


def test_paper_config_builds_the_paper_model():
    model = build_model(make_cfg(PAPER))
    assert isinstance(model, APLossRetinaNet)
    assert model.anchor_generator.num_cell_anchors == [6] * 5
    # Base 4 x stride, scales 2^0 and 2^0.5, ratios 0.5/1/2: the P3 anchor areas.
    areas = Boxes(list(model.anchor_generator.cell_anchors)[0]).area()
    expected = torch.tensor([32.0**2] * 3 + [2 * 32.0**2] * 3)
    torch.testing.assert_close(areas.sort().values, expected.sort().values, rtol=1e-4, atol=0)
    for tower in (model.head.cls_subnet, model.head.bbox_subnet):  # 4 x (conv, ReLU), no norm
        assert [type(m) for m in tower] == [torch.nn.Conv2d, torch.nn.ReLU] * 4
    assert model.backbone.top_block.in_feature == "res5"
    assert model.box2box_transform.weights == (10.0, 10.0, 5.0, 5.0)
    assert model.anchor_matcher.thresholds[1:-1] == [0.4, 0.5]
    assert model.anchor_matcher.allow_low_quality_matches
    assert (model.delta, model.interpolated, model.smooth_l1_beta) == (1.0, True, 1.0)
    assert model.ranking_images == 8  # the released code's 8 images per GPU, whatever the processes
    # Anchor centres (x + 1/2) * s: the released code's x * s + (s - 1) / 2 (3.5, 11.5 at P3),
    # up to 0.5 px.
    p3 = model.anchor_generator([torch.zeros(1, 1, 2, 2)] * 5)[0].get_centers()
    torch.testing.assert_close(
        p3[::6], torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]])
    )
    assert (model.test_score_thresh, model.test_nms_thresh) == (0.01, 0.5)


def test_gradient_is_the_hand_computed_error_driven_update(model):
    # Two images, two anchors each, K = 2 (label 2 = background, -1 = ignored), delta 1:
    # H(x) = clip(x / 2 + 1/2, 0, 1). Positives: a = 2.0 (image 0), b = 1.0 (image 1).
    # Negatives 0.0 and 1.5, -3.0 (image 0), 0.5 (image 1); the ignored anchor's [5, 5] is out.
    logits = torch.tensor(
        [[[2.0, 0.0], [1.5, -3.0]], [[5.0, 5.0], [0.5, 1.0]]], dtype=torch.float64
    )
    labels = torch.tensor([[0, 2], [-1, 1]])
    loss, grad, storage = ranking_grad(model, logits, labels)
    # a: R+ = 1 + H(-1) = 1, R- = H(-0.5) = 0.25 (from 1.5): precision 0.8, L_a,1.5 = 0.2.
    # b: R+ = 1 + H(1) = 2, R- = H(0.5) + H(-0.5) = 1 (1.5 and 0.5): precision 2/3,
    #    L_b,1.5 = 0.75 / 3, L_b,0.5 = 0.25 / 3. Ascending order b, a: no interpolation needed.
    assert loss.item() == pytest.approx(1 - (0.8 + 2 / 3) / 2)
    expected = torch.zeros_like(logits)
    expected[0, 0, 0] = -(1 - 0.8) / 2
    expected[1, 1, 1] = -(1 - 2 / 3) / 2
    expected[0, 1, 0] = (0.2 + 0.25) / 2  # the negative at 1.5
    expected[1, 1, 0] = (0.25 / 3) / 2  # the negative at 0.5
    torch.testing.assert_close(grad, expected)
    assert storage.history("ap_loss/num_pos").latest() == 2
    assert storage.history("ap_loss/num_neg").latest() == 4
    assert storage.history("ap_loss/num_active_neg").latest() == 3  # all but -3.0 (< 1.0 - 1)
    assert storage.history("ap_loss/interpolated_ap").latest() == pytest.approx((0.8 + 2 / 3) / 2)


def test_perfect_ranking_gives_zero_loss_and_gradient(model):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(-1, 6, (2, 40), generator=g)
    labels[0, 0] = 3
    logits = torch.rand(2, 40, 5, generator=g, dtype=torch.float64) - 5.0  # negatives in [-5, -4]
    pos = (labels >= 0) & (labels < 5)
    logits[pos, labels[pos]] = 2.0 + torch.rand(int(pos.sum()), generator=g, dtype=torch.float64)
    # Every positive beats every negative by more than delta = 1.
    loss, grad, storage = ranking_grad(model, logits, labels)
    assert loss.item() == 0 and (grad == 0).all()
    assert storage.history("ap_loss/interpolated_ap").latest() == 1.0
    assert storage.history("ap_loss/num_active_neg").latest() == 0


def test_no_positives_gives_zero_loss(model):
    labels = torch.tensor([[5, 5, -1], [5, -1, 5]])
    loss, grad, storage = ranking_grad(model, torch.randn(2, 3, 5), labels)
    assert loss.item() == 0 and (grad == 0).all()
    assert storage.history("ap_loss/num_pos").latest() == 0
    assert "ap_loss/interpolated_ap" not in storage.histories()


def test_model_loss_path_agrees_with_the_reference(model):
    """The logits and labels the model really ranks, against the O(P*N) reference."""
    model.train()
    batch = make_inputs([[[10, 10, 60, 50], [70, 20, 120, 90]], [[5, 5, 40, 70]]])
    images = model.preprocess_image(batch)
    gt_instances = [x["instances"] for x in batch]
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    pred_logits, pred_deltas = model._transpose_dense_predictions(model.head(features), [5, 4])
    anchors = model.anchor_generator(features)
    gt_labels, gt_boxes = model.label_anchors(anchors, gt_instances)
    # Logits spread over a few units, as after some training (the initial ones all sit at -4.6).
    g = torch.Generator().manual_seed(2)
    leaves = [
        (x.detach() + 2 * torch.randn(x.shape, generator=g)).requires_grad_(True)
        for x in pred_logits
    ]
    with EventStorage():
        losses = model.losses(anchors, leaves, gt_labels, pred_deltas, gt_boxes)
    losses["loss_cls"].backward()
    flat_logits = cat([x.detach() for x in leaves], dim=1).flatten(0, 1)
    flat_labels = torch.stack(gt_labels).flatten()
    assert ((flat_labels >= 0) & (flat_labels < 5)).sum() >= 3 and (flat_labels == -1).any()
    ref_loss, ref_grad = reference.ap_loss(flat_logits.double(), flat_labels)
    torch.testing.assert_close(losses["loss_cls"].double(), ref_loss, rtol=1e-5, atol=1e-7)
    grad = cat([x.grad for x in leaves], dim=1).flatten(0, 1)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-8)


def test_box_loss_is_smooth_l1_mean_over_4_npos(model):
    model.train()
    batch = make_inputs([[[10, 10, 60, 50]]])
    with EventStorage() as storage:
        losses = model(batch)
        num_pos = storage.history("num_pos_anchors").latest()
    images = model.preprocess_image(batch)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    _, deltas = model._transpose_dense_predictions(model.head(features), [5, 4])
    anchors = Boxes.cat(model.anchor_generator(features))
    gt_labels, gt_boxes = model.label_anchors(
        model.anchor_generator(features), [batch[0]["instances"]]
    )
    pos = (gt_labels[0] >= 0) & (gt_labels[0] < 5)
    target = model.box2box_transform.get_deltas(anchors.tensor[pos], gt_boxes[0][pos])
    expected = torch.nn.functional.smooth_l1_loss(cat(deltas, 1)[0][pos], target, beta=1.0)
    assert int(pos.sum()) == num_pos
    torch.testing.assert_close(losses["loss_box_reg"], expected)  # mean over 4 * N_pos values


def minibatch_and_per_image(shift, interpolated):
    """Ranking losses and gradients of a two-image batch whose second image's logits are shifted
    by `shift`, in minibatch and per-image mode."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 30, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(-1, 4, (2, 30), generator=g)
    logits[1] += shift
    out = {}
    for per_image in (False, True):
        m = build_model(
            make_cfg(
                TINY,
                "MODEL.AP_LOSS.RANKING_IMAGES",
                int(per_image),
                "MODEL.AP_LOSS.INTERPOLATED",
                interpolated,
            )
        )
        out[per_image] = ranking_grad(m, logits, labels)[:2]
    return logits, labels, out


def test_per_image_ranking_ignores_a_score_shift_between_images():
    logits, labels, base = minibatch_and_per_image(0.0, True)
    _, _, shifted = minibatch_and_per_image(50.0, True)
    torch.testing.assert_close(shifted[True][0], base[True][0])
    torch.testing.assert_close(shifted[True][1], base[True][1])
    expected = torch.stack([reference.ap_loss(logits[i], labels[i])[0] for i in range(2)]).mean()
    torch.testing.assert_close(base[True][0], expected)
    # The minibatch ranking sees the shift.
    assert shifted[False][0].item() != pytest.approx(base[False][0].item())


def test_minibatch_ranking_differs_only_where_the_images_interleave():
    # Image 1 shifted far below image 0 (non-interpolated AP, so that precisions do not leak
    # through the running maximum). Nothing of image 1 outranks anything of image 0: image 0's
    # positives keep their precision, their update is only rescaled from 1/P0 to 1/P. Everything
    # of image 0 outranks image 1's positives: each gets R+ += P0 and R- += Q0 (image 0's
    # positive and negative entries), and image 0's negatives get more (from image 1's positives).
    logits, labels, out = minibatch_and_per_image(-50.0, False)
    num_classes = logits.shape[2]
    pos = (labels >= 0) & (labels < num_classes)
    num_pos = pos.sum(1)
    num_neg0 = int((labels[0] >= 0).sum()) * num_classes - int(num_pos[0])
    minibatch_grad, per_image_grad = out[False][1], out[True][1]
    alone = [reference.ap_loss(logits[i], labels[i], interpolated=False)[1] for i in range(2)]
    torch.testing.assert_close(per_image_grad[0], alone[0] / 2)  # mean over the two images

    rows0 = torch.nonzero(pos[0]).squeeze(1)
    torch.testing.assert_close(
        minibatch_grad[0][rows0, labels[0, rows0]],
        alone[0][rows0, labels[0, rows0]] * num_pos[0] / num_pos.sum(),
    )
    rows1 = torch.nonzero(pos[1]).squeeze(1)
    s = logits[1][rows1, labels[1, rows1]]  # image 1's positive scores
    r_plus = 0.5 + ((s[None, :] - s[:, None]) / 2 + 0.5).clamp(0, 1).sum(1)  # 1 + H(others)
    prec_alone = 1 + alone[1][rows1, labels[1, rows1]] * num_pos[1]  # -(1 - p) / P1
    r_minus = r_plus * (1 - prec_alone) / prec_alone
    prec_together = (r_plus + num_pos[0]) / (r_plus + r_minus + num_pos[0] + num_neg0)
    torch.testing.assert_close(
        minibatch_grad[1][rows1, labels[1, rows1]], -(1 - prec_together) / num_pos.sum()
    )
    neg0 = (labels[0] >= 0)[:, None].expand(-1, num_classes).clone()
    neg0[rows0, labels[0, rows0]] = False
    assert (minibatch_grad[0][neg0] > alone[0][neg0] * num_pos[0] / num_pos.sum() + 1e-6).all()
    # Minibatch = the reference ranking of the concatenated batch.
    ref_loss, ref_grad = reference.ap_loss(
        logits.flatten(0, 1), labels.flatten(), interpolated=False
    )
    torch.testing.assert_close(out[False][0], ref_loss)
    torch.testing.assert_close(minibatch_grad.flatten(0, 1), ref_grad)


def test_training_step_gives_finite_losses_and_logs(model):
    model.train()
    model.zero_grad()
    batch = make_inputs([[[10, 10, 60, 50], [70, 20, 120, 90]], [[5, 5, 20, 30]]])
    with EventStorage() as storage:
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert 0 < losses["loss_cls"] < 1 and losses["loss_box_reg"] > 0
    logged = storage.histories()
    for key in (
        "ap_loss/interpolated_ap",
        "ap_loss/num_pos",
        "ap_loss/num_neg",
        "ap_loss/num_active_neg",
    ):
        assert key in logged, key
    assert logged["ap_loss/interpolated_ap"].latest() == pytest.approx(
        1 - losses["loss_cls"].item()
    )
    sum(losses.values()).backward()
    assert model.head.cls_score.weight.grad.abs().sum() > 0
    assert model.head.bbox_pred.weight.grad.abs().sum() > 0
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def test_image_without_gt(model):
    model.train()
    model.zero_grad()
    with EventStorage():
        losses = model(make_inputs([[], []]))
        assert losses["loss_cls"].item() == 0 and losses["loss_box_reg"].item() == 0
        sum(losses.values()).backward()  # the graph exists, the update is zero
        # One image with GT beside an empty one: the empty image contributes negatives.
        model.zero_grad()
        losses = model(make_inputs([[[10, 10, 60, 50]], []]))
    assert 0 < losses["loss_cls"].item() < 1
    sum(losses.values()).backward()
    assert model.head.cls_score.weight.grad.abs().sum() > 0


def test_inference_output_format(model):
    model.eval()
    batch = make_inputs([[[10, 10, 60, 50]], []])
    with torch.no_grad():
        outputs = model(batch)
    assert len(outputs) == 2 and all(o["instances"].image_size == (96, 128) for o in outputs)


def test_ranking_counts():
    logits = torch.tensor([[3.0, 2.5], [0.0, 1.9], [9.0, 9.0]])
    labels = torch.tensor([0, 2, -1])
    # One positive (3.0); negatives 2.5, 0.0, 1.9; within delta 1 of 3.0: 2.5 only.
    assert ranking_counts(logits, labels, 1.0) == (1, 3, 1)
    assert ranking_counts(logits, labels, 1.2) == (1, 3, 2)


@pytest.mark.parametrize(
    "opts, match",
    [
        (["MODEL.AP_LOSS.RANKING_IMAGES", -1], "MODEL.AP_LOSS.RANKING_IMAGES must be >= 0, got -1"),
        (["MODEL.AP_LOSS.DELTA", 0.0], "MODEL.AP_LOSS.DELTA must be > 0, got 0.0"),
    ],
)
def test_bad_config_names_the_key(opts, match):
    with pytest.raises(ValueError, match=match):
        build_model(make_cfg(TINY, *opts))


# --- Global ranking across processes (2 CPU processes, gloo) ---------------------------------

ROWS = {0: (2, 20), 1: (2, 15)}  # (images, anchors per image) of each rank: 40 and 30 rows


def global_batch():
    g = torch.Generator().manual_seed(4)
    parts = {}
    for rank, (n, r) in ROWS.items():
        logits = torch.randn(n, r, 5, generator=g, dtype=torch.float64) * 2
        labels = torch.randint(-1, 6, (n, r), generator=g)
        parts[rank] = (logits, labels)
    return parts


def _global_ranking_worker(rank, init_file, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        model = build_model(make_cfg(TINY, "MODEL.AP_LOSS.RANKING_IMAGES", 4))  # both processes
        logits, labels = global_batch()[rank]
        loss, grad, storage = ranking_grad(model, logits, labels)
        results[rank] = (loss, grad, storage.history("ap_loss/num_pos").latest())
    finally:
        dist.destroy_process_group()


def test_global_ranking_across_two_processes(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_global_ranking_worker, args=(str(tmp_path / "init"), results), nprocs=2)
    parts = global_batch()
    all_logits = torch.cat([parts[r][0].flatten(0, 1) for r in (0, 1)])
    all_labels = torch.cat([parts[r][1].flatten() for r in (0, 1)])
    ref_loss, ref_grad = reference.ap_loss(all_logits, all_labels)
    num_pos = int(((all_labels >= 0) & (all_labels < 5)).sum())
    start = 0
    for rank in (0, 1):
        loss, grad, logged_pos = results[rank]
        torch.testing.assert_close(loss, ref_loss)  # both report the global 1 - AP
        assert logged_pos == num_pos
        rows = grad.flatten(0, 1).shape[0]
        # DDP averages the two workers' gradients: each holds 2 (processes per ranking) x its
        # share of the global update.
        torch.testing.assert_close(grad.flatten(0, 1) / 2, ref_grad[start : start + rows])
        start += rows
    # Global differs from what each process would rank alone.
    alone = reference.ap_loss(parts[0][0].flatten(0, 1), parts[0][1].flatten())[0]
    assert alone.item() != pytest.approx(ref_loss.item())


def test_ranking_of_the_whole_minibatch_in_one_process_is_the_default(model):
    g = torch.Generator().manual_seed(5)
    logits, labels = torch.randn(2, 20, 5, generator=g), torch.randint(-1, 6, (2, 20), generator=g)
    base = ranking_grad(model, logits, labels)
    model.ranking_images = 2
    try:
        glob = ranking_grad(model, logits, labels)
    finally:
        model.ranking_images = 0
    torch.testing.assert_close(glob[0], base[0])
    torch.testing.assert_close(glob[1], base[1])


# --- Ranking groups of 8 images (METHODS.md Errata 7) ------------------------------------------


def eight_image_batches(num_images, seed=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_images, 12, 3, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(-1, 4, (num_images, 12), generator=g)
    labels[:, 0] = torch.arange(num_images) % 3  # a positive in every image
    return logits, labels


def with_ranking_images(model, k, fn):
    model.ranking_images = k
    try:
        return fn()
    finally:
        model.ranking_images = 0


def test_group_of_8_images_is_one_ranking_of_their_rows(model):
    logits, labels = eight_image_batches(16)
    loss, grad, storage = with_ranking_images(model, 8, lambda: ranking_grad(model, logits, labels))
    # Two rankings: images 0-7 and 8-15, each the reference ranking of its rows; mean of both.
    refs = [
        reference.ap_loss(logits[i : i + 8].flatten(0, 1), labels[i : i + 8].flatten())
        for i in (0, 8)
    ]
    torch.testing.assert_close(loss, (refs[0][0] + refs[1][0]) / 2)
    torch.testing.assert_close(grad.flatten(0, 1), torch.cat([refs[0][1], refs[1][1]]) / 2)
    assert storage.history("ap_loss/num_pos").latest() == int(((labels >= 0) & (labels < 3)).sum())
    # Not the ranking of pairs (a per-process minibatch of 2 on 8 GPUs) nor of all 16.
    pairs = with_ranking_images(model, 2, lambda: ranking_grad(model, logits, labels))[0]
    whole = ranking_grad(model, logits, labels)[0]
    assert pairs.item() != pytest.approx(loss.item()) and whole.item() != pytest.approx(loss.item())


def test_group_of_8_images_across_4_processes_of_2(model, monkeypatch):
    """8 processes x 2 images, as the 16-image batch on 8 GPUs: rank 5 ranks the images of
    ranks 4-7 together. The all-gather is simulated."""
    import d2ext.modeling.meta_arch.ap_loss_retinanet as module

    logits, labels = eight_image_batches(16, seed=7)
    parts = [
        (logits[2 * r : 2 * r + 2].flatten(0, 1), labels[2 * r : 2 * r + 2].flatten())
        for r in range(8)
    ]
    monkeypatch.setattr(module.comm, "get_world_size", lambda: 8)
    monkeypatch.setattr(module.comm, "get_rank", lambda: 5)

    def fake_all_gather_rows(value):
        index = 0 if value.dim() == 2 else 1  # logits (rows, K) or labels (rows,)
        mine = parts[5][index]
        assert value.shape == mine.shape and torch.equal(value.detach(), mine)
        return [p[index].clone() for p in parts]

    monkeypatch.setattr(module, "all_gather_rows", fake_all_gather_rows)
    loss, grad, _ = with_ranking_images(
        model, 8, lambda: ranking_grad(model, logits[10:12], labels[10:12])
    )
    ref_loss, ref_grad = reference.ap_loss(logits[8:16].flatten(0, 1), labels[8:16].flatten())
    torch.testing.assert_close(loss, ref_loss)
    # Rank 5 holds rows 24..47 of the group's 96; x4: DDP's average over 8 processes of the
    # 2 groups' updates must give their mean.
    torch.testing.assert_close(grad.flatten(0, 1), 4 * ref_grad[24:48])
    alone = with_ranking_images(
        model, 0, lambda: ranking_grad(model, logits[10:12], labels[10:12])
    )[0]
    assert alone.item() != pytest.approx(ref_loss.item())


@pytest.mark.parametrize("num_images, world_size, group", [(2, 3, 8), (3, 1, 2), (2, 8, 6)])
def test_ranking_images_that_cannot_be_honoured(model, monkeypatch, num_images, world_size, group):
    import d2ext.modeling.meta_arch.ap_loss_retinanet as module

    monkeypatch.setattr(module.comm, "get_world_size", lambda: world_size)
    logits, labels = eight_image_batches(num_images)
    match = (
        f"MODEL.AP_LOSS.RANKING_IMAGES={group} cannot group the {num_images} images per "
        f"process x {world_size} processes"
    )
    with pytest.raises(ValueError, match=match):
        with_ranking_images(model, group, lambda: ranking_grad(model, logits, labels))
