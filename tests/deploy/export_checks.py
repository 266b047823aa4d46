"""Helpers of the export tests: tiny models that detect something at random init, their
PyTorch detections, and the comparison of exported detections with those."""

import math
import os

import numpy as np
import torch
from conftest import CONFIGS, build_tiny_model
from torch import nn

# Tolerances of the exported detections against the PyTorch model's.
SCORE_ATOL = 1e-4
BOX_ATOL = 1e-2  # pixels
# Traced at the first size, checked at both (the second is not a multiple of the strides).
IMAGE_SIZES = [(96, 128), (130, 170)]

# name -> tiny config, or (tiny config, *opts).
TINY_CONFIGS = {
    "atss": "atss_R_18_FPN_tiny.yaml",
    "dynamic_atss": "dynamic_atss_R_18_FPN_tiny.yaml",
    "gfl": "gfl_R_18_FPN_tiny.yaml",
    "gflv2": "gflv2_R_18_FPN_tiny.yaml",
    "vfnet": "vfnet_R_18_FPN_tiny.yaml",
    "musu": "musu_R_18_FPN_tiny.yaml",
    "aploss_retinanet": "aploss_retinanet_R_18_FPN_tiny.yaml",
    "libra_faster_rcnn": "libra_faster_rcnn_R_18_FPN_tiny.yaml",
    # 2 locations per level: P7 has 1 at the traced size and 4 at the second, so the graph must
    # keep min(2, locations) as a computation, not the traced constant 1.
    "gfl_top2_locations": ("gfl_R_18_FPN_tiny.yaml", "MODEL.GFL.TOPK_CANDIDATES_TEST", "2"),
}


def _spread(layer: nn.Module, bias: float, generator: torch.Generator):
    # Random init scores every location almost alike (std 0.01 weights): widen the weights so
    # scores differ (no near-ties that two runtimes could order differently) and set the bias
    # so that some, not all, candidates pass the 0.05 test threshold.
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.05)
        layer.bias.fill_(bias)


def detecting_model(name: str) -> nn.Module:
    """The tiny model of ``name``, randomly initialised (seed 0) so that it detects something."""
    config, *opts = (
        TINY_CONFIGS[name] if isinstance(TINY_CONFIGS[name], tuple) else (TINY_CONFIGS[name],)
    )
    model = build_tiny_model(
        os.path.join(CONFIGS, "Synthetic", config), "MODEL.DEVICE", "cpu", *opts
    )
    g = torch.Generator().manual_seed(0)
    if hasattr(model, "head"):
        _spread(model.head.cls_score, -math.log(1 / 0.1 - 1), g)
    else:  # R-CNN: the RPN's objectness and the box head's classifier.
        _spread(model.proposal_generator.rpn_head.objectness_logits, 0.0, g)
        _spread(model.roi_heads.box_predictor.cls_score, 0.0, g)
    return model.eval()


def sample_image(size, seed=0) -> torch.Tensor:
    """A (3, H, W) float image in 0..255: smooth random blobs, so features vary in space."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size[0] // 8 + 1, size[1] // 8 + 1, generator=g)
    image = nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0]
    return (image * 255).round()


def pytorch_detections(model: nn.Module, image: torch.Tensor) -> dict:
    """The eager model's detections of one image as numpy arrays (R-CNN without the final
    rescale, as exported)."""
    from detectron2.modeling import GeneralizedRCNN

    with torch.no_grad():
        if isinstance(model, GeneralizedRCNN):
            instances = model.inference([{"image": image}], do_postprocess=False)[0]
        else:
            instances = model([{"image": image}])[0]["instances"]
    return {
        "pred_boxes": instances.pred_boxes.tensor.numpy(),
        "scores": instances.scores.numpy(),
        "pred_classes": instances.pred_classes.numpy(),
    }


def max_differences(expected: dict, actual: dict, where: str):
    """
    Asserts the same detections (count and classes, in score order) with scores within
    SCORE_ATOL and boxes within BOX_ATOL; returns the (score, box) max absolute differences.
    """
    n = len(expected["scores"])
    assert n > 0, f"{where}: the PyTorch model detects nothing, the check would be empty"
    assert len(actual["scores"]) == n, (
        f"{where}: {len(actual['scores'])} detections, PyTorch has {n}"
    )
    e_order = np.argsort(-expected["scores"], kind="stable")
    a_order = np.argsort(-np.asarray(actual["scores"]), kind="stable")
    e_cls = expected["pred_classes"][e_order]
    a_cls = np.asarray(actual["pred_classes"])[a_order]
    assert (e_cls == a_cls).all(), f"{where}: classes differ: {e_cls} vs {a_cls}"
    score_diff = float(
        np.abs(expected["scores"][e_order] - np.asarray(actual["scores"])[a_order]).max()
    )
    box_diff = float(
        np.abs(expected["pred_boxes"][e_order] - np.asarray(actual["pred_boxes"])[a_order]).max()
    )
    assert score_diff <= SCORE_ATOL, f"{where}: scores differ by {score_diff}"
    assert box_diff <= BOX_ATOL, f"{where}: boxes differ by {box_diff} px"
    return score_diff, box_diff
