"""
configs/MMDet/libra-faster-rcnn_r50_fpn_1x_coco loads mmdetection 3.3's Libra Faster R-CNN
checkpoint (converted on load) and computes what mmdetection computes: input, backbone + FPN +
BFP features, RPN raw outputs and proposals, R-CNN raw outputs on the same proposals, final
detections, and the training losses where the samples can be made the same.

mmdetection is the oracle (tests/model_zoo/mmdet_oracle.py: random weights, its checkpoint
format, torchvision's nms / roi_align standing in for mmcv's compiled ops). Tolerances (float32):
features and raw outputs <= 1e-5 relative to the tensor's largest magnitude; proposals: same
count, boxes within 1e-3 px, scores 1e-5 relative; detections: same count, classes and scores
(1e-5 relative), boxes within 1e-2 px; losses <= 1e-5 relative. Measured values: MODEL_ZOO.md.

Losses: the samplers are random in both libraries, with different random streams, so
- the RPN losses are compared with both samplers made deterministic by the same rule (every
  random draw returns the first candidates by anchor index: mmdet's RandomSampler.random_choice
  and d2ext's sampling keys are patched); the assignment, the valid-anchor mask, neg_pos_ub and
  the normaliser are then the libraries' own;
- the R-CNN losses are compared on mmdetection's own sampled RoIs (its IoU-balanced negatives
  and instance-balanced positives), fed to d2ext's box head and predictor with their labels and
  targets; d2ext's samplers are tested against their definition in tests/modeling/test_libra*.
"""

import copy
import logging

import pytest
import torch
from mmdet_oracle import build_random_mmdet_model, import_mmdet, save_mmdet_checkpoint
from test_mmdet_parity import (
    assert_same_detections,
    d2_inputs,
    d2ext_model,
    images,
    mm_inputs,
    rel_diff,
)

MM_CONFIG = "libra_rcnn/libra-faster-rcnn_r50_fpn_1x_coco.py"
CONFIG = "MMDet/libra-faster-rcnn_r50_fpn_1x_coco.yaml"
LEVELS = ["p2", "p3", "p4", "p5", "p6"]


@pytest.fixture(scope="module")
def libra(tmp_path_factory):
    import_mmdet()
    logging.getLogger("mmengine").setLevel(logging.ERROR)
    mm_model, _ = build_random_mmdet_model(MM_CONFIG)
    path = str(tmp_path_factory.mktemp("mmdet") / "libra.pth")
    save_mmdet_checkpoint(mm_model, path)
    return mm_model, d2ext_model(CONFIG, path), path


def _forward_features(mm_model, model, imgs):
    data = mm_inputs(mm_model, imgs)
    images_ = model.preprocess_image(d2_inputs(imgs))
    return data, images_, mm_model.extract_feat(data["inputs"]), model.backbone(images_.tensor)


def _mm_proposals(mm_model, mm_features, data):
    cls_scores, bbox_preds = mm_model.rpn_head(mm_features)
    metas = [s.metainfo for s in data["data_samples"]]
    return mm_model.rpn_head.predict_by_feat(
        cls_scores, bbox_preds, batch_img_metas=metas, cfg=mm_model.test_cfg.rpn, rescale=False
    )


@torch.no_grad()
def test_features_and_rpn(libra):
    mm_model, model, _ = libra
    imgs = images()
    data, images_, mm_features, features = _forward_features(mm_model, model, imgs)
    assert images_.tensor.shape == data["inputs"].shape == (2, 3, 224, 320)
    torch.testing.assert_close(images_.tensor, data["inputs"], rtol=0, atol=0)
    # Backbone + FPN P2-P6 (P6 = max-pool) + BFP.
    assert len(mm_features) == 5
    for name, a in zip(LEVELS, mm_features):
        assert a.shape == features[name].shape
        assert rel_diff(a, features[name]) <= 1e-5, f"{name}: {rel_diff(a, features[name])}"

    # RPN raw outputs: objectness (N, A, H, W) and deltas (N, A*4, H, W), same anchor order.
    rpn = model.proposal_generator
    objectness, deltas = rpn.rpn_head([features[f] for f in rpn.in_features])
    mm_cls, mm_reg = mm_model.rpn_head(mm_features)
    for level, (a, b, c, d) in enumerate(zip(mm_cls, objectness, mm_reg, deltas)):
        assert a.shape == b.shape and c.shape == d.shape
        assert rel_diff(a, b) <= 1e-5, f"RPN objectness level {level}: {rel_diff(a, b)}"
        assert rel_diff(c, d) <= 1e-5, f"RPN deltas level {level}: {rel_diff(c, d)}"

    # Proposals: nms_pre 1000 per level, boxes clipped, empty dropped, NMS 0.7 per level, 1000.
    mm_props = _mm_proposals(mm_model, mm_features, data)
    props, _ = rpn(images_, features)
    for mm_p, p in zip(mm_props, props):
        assert len(p) == len(mm_p) == 1000
        scores = p.objectness_logits.sigmoid()
        score_diff = rel_diff(mm_p.scores, scores)
        assert score_diff <= 1e-5, f"proposal scores: {score_diff}"
        # Both are sorted by score; proposals whose scores are within float32 rounding of each
        # other (a few pairs per image) may come in either order: each mmdetection proposal is
        # matched to the d2ext proposals of the same score (1e-6).
        same_score = (mm_p.scores[:, None] - scores[None, :]).abs() <= 1e-6
        dist = (mm_p.bboxes[:, None, :] - p.proposal_boxes.tensor[None, :, :]).abs().amax(dim=2)
        box_diff = dist.masked_fill(~same_score, float("inf")).min(dim=1).values.max().item()
        assert box_diff <= 1e-3, f"proposal boxes differ by {box_diff} px"


@torch.no_grad()
def test_roi_head_outputs_on_the_same_proposals(libra):
    from detectron2.structures import Boxes
    from mmdet.structures.bbox import bbox2roi

    mm_model, model, _ = libra
    imgs = images()
    data, _, mm_features, features = _forward_features(mm_model, model, imgs)
    boxes = [p.bboxes for p in _mm_proposals(mm_model, mm_features, data)]
    mm_out = mm_model.roi_head._bbox_forward(mm_features, bbox2roi(boxes))
    rh = model.roi_heads
    x = rh.box_pooler([features[f] for f in rh.box_in_features], [Boxes(b) for b in boxes])
    scores, deltas = rh.box_predictor(rh.box_head(x))
    # fc_cls: 81 logits, background last; fc_reg: 80 x (dx, dy, dw, dh), class-major.
    assert scores.shape == mm_out["cls_score"].shape == (2000, 81)
    assert deltas.shape == mm_out["bbox_pred"].shape == (2000, 320)
    assert rel_diff(mm_out["cls_score"], scores) <= 1e-5, rel_diff(mm_out["cls_score"], scores)
    assert rel_diff(mm_out["bbox_pred"], deltas) <= 1e-5, rel_diff(mm_out["bbox_pred"], deltas)


@torch.no_grad()
def test_detections(libra):
    mm_model, model, _ = libra
    assert_same_detections(mm_model, model, 1e-5, "libra")


def test_rpn_losses_with_the_same_samples(libra, monkeypatch):
    from detectron2.utils.events import EventStorage
    from mmdet.models.task_modules.samplers import RandomSampler

    import d2ext.modeling.sampling as sampling

    # Every random draw takes the first candidates by index, in both libraries.
    monkeypatch.setattr(RandomSampler, "random_choice", lambda self, gallery, num: gallery[:num])
    monkeypatch.setattr(
        sampling,
        "_random_keys",
        lambda n, device, generator: (
            torch.arange(n, dtype=torch.float32, device=device) / max(n, 1)
        ),
    )
    mm_model, model, _ = libra
    imgs = images()
    data = mm_inputs(mm_model, imgs, with_gt=True)
    rpn_samples = copy.deepcopy(data["data_samples"])
    for sample in rpn_samples:  # as TwoStageDetector.loss: the RPN's GT are class 0
        sample.gt_instances.labels = torch.zeros_like(sample.gt_instances.labels)
    batch = d2_inputs(imgs, with_gt=True)
    with torch.no_grad():
        mm_features = mm_model.extract_feat(data["inputs"])
        images_ = model.preprocess_image(batch)
        features = model.backbone(images_.tensor)
    mm_model.rpn_head.train()
    model.proposal_generator.train()
    try:
        mm_losses = mm_model.rpn_head.loss(mm_features, rpn_samples)
        with EventStorage():
            _, losses = model.proposal_generator(images_, features, [b["instances"] for b in batch])
    finally:
        mm_model.rpn_head.eval()
        model.proposal_generator.eval()
    for mm_name, name in (("loss_rpn_cls", "loss_rpn_cls"), ("loss_rpn_bbox", "loss_rpn_loc")):
        mm_value = sum(mm_losses[mm_name]).detach()
        diff = rel_diff(mm_value, losses[name].detach())
        assert diff <= 1e-5, f"{mm_name}: {mm_value.item()} vs {losses[name].item()} ({diff})"


def test_roi_head_losses_on_the_same_samples(libra):
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage
    from mmdet.models.utils import unpack_gt_instances

    mm_model, model, _ = libra
    imgs = images()
    data = mm_inputs(mm_model, imgs, with_gt=True)
    torch.manual_seed(0)
    with torch.no_grad():
        mm_features = mm_model.extract_feat(data["inputs"])
        features = model.backbone(model.preprocess_image(d2_inputs(imgs)).tensor)
        proposals = _mm_proposals(mm_model, mm_features, data)
    gt_instances, gt_ignore, _ = unpack_gt_instances(data["data_samples"])
    rh, mm_rh = model.roi_heads, mm_model.roi_head
    samples, d2_proposals = [], []
    for i, (props, (h, w)) in enumerate(zip(proposals, [img.shape[1:] for img in imgs])):
        props = props.clone()
        props.priors = props.pop("bboxes")
        assign = mm_rh.bbox_assigner.assign(props, gt_instances[i], gt_ignore[i])
        sample = mm_rh.bbox_sampler.sample(assign, props, gt_instances[i])
        samples.append(sample)
        num_neg = len(sample.neg_priors)
        p = Instances((h, w))
        p.proposal_boxes = Boxes(torch.cat([sample.pos_priors, sample.neg_priors]))
        p.gt_classes = torch.cat([sample.pos_gt_labels, torch.full((num_neg,), rh.num_classes)])
        p.gt_boxes = Boxes(torch.cat([sample.pos_gt_bboxes, sample.neg_priors]))
        d2_proposals.append(p)
        assert len(sample.pos_priors) > 0 and num_neg > 0
    mm_rh.train()
    rh.train()
    try:
        mm_losses = mm_rh.bbox_loss(mm_features, samples)["loss_bbox"]
        with EventStorage():
            losses = rh._forward_box(features, d2_proposals)
    finally:
        mm_rh.eval()
        rh.eval()
    for mm_name, name in (("loss_cls", "loss_cls"), ("loss_bbox", "loss_box_reg")):
        diff = rel_diff(mm_losses[mm_name].detach(), losses[name].detach())
        assert diff <= 1e-5, (
            f"{mm_name}: {mm_losses[mm_name].item()} vs {losses[name].item()} ({diff})"
        )


def test_libra_checkpoint_needs_the_libra_config(libra):
    """The ATSS config cannot take a Libra checkpoint: the error names the config to use."""
    from d2ext.checkpoint import ConversionError

    _, _, path = libra
    with pytest.raises(ConversionError, match="Libra R-CNN"):
        d2ext_model("MMDet/atss_r50_fpn_1x_coco.yaml", path)
