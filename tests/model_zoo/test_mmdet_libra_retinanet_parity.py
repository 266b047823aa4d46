"""
configs/MMDet/libra-retinanet_r50_fpn_1x_coco (d2ext's LibraRetinaNet: Detectron2's RetinaNet with
the balanced feature pyramid and the balanced L1 box loss) loads mmdetection 3.3's Libra RetinaNet
checkpoint (converted on load) and computes what mmdetection computes: input, FPN + BFP
features, raw head outputs (the 9 anchors of a location in mmdetection's order,
MMDetAnchorGenerator), detections and training losses.

mmdetection is the oracle (tests/model_zoo/mmdet_oracle.py: random weights, its checkpoint
format, torchvision's nms standing in for mmcv's compiled op). Tolerances (float32): features and
raw outputs <= 1e-5 relative to the tensor's largest magnitude; detections: same count, classes
and scores (1e-6 relative), boxes within 1e-2 px; losses <= 1e-5 relative. Measured: MODEL_ZOO.md.
"""

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

MM_CONFIG = "libra_rcnn/libra-retinanet_r50_fpn_1x_coco.py"
CONFIG = "MMDet/libra-retinanet_r50_fpn_1x_coco.yaml"


@pytest.fixture(scope="module")
def libra_retinanet(tmp_path_factory):
    import_mmdet()
    logging.getLogger("mmengine").setLevel(logging.ERROR)
    mm_model, _ = build_random_mmdet_model(MM_CONFIG, init_weights=False)
    path = str(tmp_path_factory.mktemp("mmdet") / "libra_retinanet.pth")
    save_mmdet_checkpoint(mm_model, path)
    return mm_model, d2ext_model(CONFIG, path)


@torch.no_grad()
def test_features_and_head_outputs(libra_retinanet):
    mm_model, model = libra_retinanet
    imgs = images()
    mm_x = mm_inputs(mm_model, imgs)["inputs"]
    x = model.preprocess_image(d2_inputs(imgs)).tensor
    assert x.shape == mm_x.shape == (2, 3, 224, 320)
    torch.testing.assert_close(x, mm_x, rtol=0, atol=0)
    mm_features = mm_model.extract_feat(mm_x)
    features = model.backbone(x)
    features = [features[f] for f in model.head_in_features]
    assert len(features) == len(mm_features) == 5
    for level, (a, b) in enumerate(zip(mm_features, features)):
        assert a.shape == b.shape
        assert rel_diff(a, b) <= 1e-5, f"P{level + 3}: {rel_diff(a, b)}"
    outputs = model.head(features)
    mm_outputs = mm_model.bbox_head(mm_features)
    for output, (mm_levels, levels) in enumerate(zip(mm_outputs, outputs)):
        for level, (a, b) in enumerate(zip(mm_levels, levels)):
            assert a.shape == b.shape
            assert rel_diff(a, b) <= 1e-5, f"output {output} level {level}: {rel_diff(a, b)}"
    # The anchors: mmdetection's prior generator, same boxes in the same order.
    mm_anchors = mm_model.bbox_head.prior_generator.grid_priors(
        [f.shape[-2:] for f in mm_features], device="cpu"
    )
    anchors = model.anchor_generator(features)
    for level, (a, b) in enumerate(zip(mm_anchors, anchors)):
        assert a.shape == b.tensor.shape
        assert (a - b.tensor).abs().max() <= 1e-4, f"anchors level {level}"


@torch.no_grad()
def test_detections(libra_retinanet):
    mm_model, model = libra_retinanet
    assert_same_detections(mm_model, model, 1e-6, "libra retinanet")


def test_training_losses(libra_retinanet):
    from detectron2.utils.events import EventStorage
    from test_mmdet_parity import GT  # noqa: F401  (the GT boxes of images())

    mm_model, model = libra_retinanet
    imgs = images()
    data = mm_inputs(mm_model, imgs, with_gt=True)
    mm_model.train()
    model.train()
    try:
        mm_losses = mm_model.loss(data["inputs"], data["data_samples"])
        with EventStorage():
            losses = model(d2_inputs(imgs, with_gt=True))
    finally:
        mm_model.eval()
        model.eval()
    for mm_name, name in (("loss_cls", "loss_cls"), ("loss_bbox", "loss_box_reg")):
        mm_value = sum(mm_losses[mm_name])
        diff = rel_diff(mm_value.detach(), losses[name].detach())
        assert diff <= 1e-5, f"{mm_name}: {mm_value.item()} vs {losses[name].item()} ({diff})"
