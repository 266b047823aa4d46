"""Each COCO config builds its method's reference where the references differ (METHODS.md
Errata 3, 4, 6): the ReLUs before P6 / P7, the anchor centres and what the pre-NMS top-k ranks.
Yaml and lazy configs alike; the P6/P7 block's ReLU options on hand-made inputs."""

import os

import pytest
import torch
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from torch.nn import functional as F

from d2ext.config import get_cfg
from d2ext.modeling.backbone import LastLevelP6P7

# config stem: (anchor offset, ReLU before P6, ReLU before P7, pre-NMS top-k unit)
REFERENCE_CHOICES = {
    # maskrcnn-benchmark forks: centres at x * s + s / 2, P7 = conv(relu(P6)), pair top-k.
    "ATSS/atss_R_50_FPN_1x": (0.5, False, True, "pair"),
    "DynamicATSS/dynamic_atss_R_50_FPN_1x": (0.5, False, True, "pair"),
    "MuSu/musu_R_50_FPN_1x": (0.5, False, True, "pair"),  # builds on the ATSS recipe
    # GFocal repos / mmdetection: centres at x * s, no ReLU, location top-k.
    "GFL/gfl_R_50_FPN_1x": (0.0, False, False, "location"),
    "GFL/gflv2_R_50_FPN_1x": (0.0, False, False, "location"),
    # Official VFNet: centres at x * s (FCOS mode: s / 2), P6 without and P7 with ReLU.
    "VFNet/vfnet_R_50_FPN_1x": (0.0, False, True, "location"),
    "VFNet/vfnet_fcos_assign_R_50_FPN_1x": (0.5, False, True, "location"),
    "VFNet/atss_vfl_R_50_FPN_1x": (0.0, False, False, "pair"),
    # GFocalV2's own mmdetection-2 model (configs/MMDet/gfocal_r50_fpn_1x).
    "MMDet/gfocal_r50_fpn_1x": (0.0, False, False, "location"),
}


def choices(model):
    top = model.backbone.top_block
    return (
        model.anchor_generator.offset,
        top.relu_before_p6,
        top.relu_before_p7,
        model.test_topk_by,
    )


@pytest.mark.parametrize("stem", REFERENCE_CHOICES)
def test_yaml_config_follows_its_reference(stem):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, stem + ".yaml"))
    cfg.MODEL.DEVICE = "cpu"
    assert choices(build_model(cfg)) == REFERENCE_CHOICES[stem]


@pytest.mark.parametrize("stem", REFERENCE_CHOICES)
def test_lazy_config_follows_its_reference(stem):
    model = instantiate(LazyConfig.load(os.path.join(CONFIGS, stem + ".py")).model)
    assert choices(model) == REFERENCE_CHOICES[stem]


@pytest.mark.parametrize("relu_p6", [False, True])
@pytest.mark.parametrize("relu_p7", [False, True])
def test_p6p7_relus(relu_p6, relu_p7):
    torch.manual_seed(0)
    block = LastLevelP6P7(4, 4, "p5", relu_before_p6=relu_p6, relu_before_p7=relu_p7)
    x = torch.randn(1, 4, 16, 16)  # half negative: every ReLU changes the result
    p6 = block.p6(F.relu(x) if relu_p6 else x)
    p7 = block.p7(F.relu(p6) if relu_p7 else p6)
    got = block(x)
    torch.testing.assert_close(got[0], p6)
    torch.testing.assert_close(got[1], p7)
    other = block.p7(p6 if relu_p7 else F.relu(p6))
    assert not torch.allclose(got[1], other)


def test_p6p7_default_is_detectron2s():
    from detectron2.modeling.backbone.fpn import LastLevelP6P7 as Detectron2P6P7

    torch.manual_seed(0)
    ours = LastLevelP6P7(4, 4, "p5")
    theirs = Detectron2P6P7(4, 4, "p5")
    theirs.load_state_dict(ours.state_dict())  # same parameter names
    x = torch.randn(1, 4, 16, 16)
    for a, b in zip(ours(x), theirs(x)):
        torch.testing.assert_close(a, b)
