"""MODEL.<METHOD>.DCN_ON_LAST_CONV of every ATSS-family head: the last conv of both towers becomes
a DCNv2 pack (zero-initialised offsets and mask logits, so at initialisation it samples the regular
grid at mask 0.5), the norm and ReLU after it stay, and training reaches its offset conv."""

import os

import pytest
import torch
from conftest import CONFIGS, build_tiny_model, make_inputs
from detectron2.utils.events import EventStorage
from torch import nn

from d2ext.modeling.backbone.deformable import DeformConvPack

NODES = {"atss": "ATSS", "dynamic_atss": "DYNAMIC_ATSS", "gfl": "GFL", "musu": "MUSU"}
NODES["vfnet"] = "VFNET"


@pytest.mark.parametrize("method", sorted(NODES))
def test_last_tower_conv_is_deformable_and_trains(method):
    config = os.path.join(CONFIGS, "Synthetic", f"{method}_R_18_FPN_tiny.yaml")
    plain = build_tiny_model(config)
    model = build_tiny_model(config, f"MODEL.{NODES[method]}.DCN_ON_LAST_CONV", "True")
    for name in ("cls_subnet", "bbox_subnet"):
        tower, plain_tower = getattr(model.head, name), getattr(plain.head, name)
        kinds = [type(m) for m in tower]
        last_conv = max(i for i, m in enumerate(plain_tower) if isinstance(m, nn.Conv2d))
        assert isinstance(tower[last_conv], DeformConvPack), kinds
        assert tower[last_conv].modulated
        assert kinds[:last_conv] == [type(m) for m in plain_tower][:last_conv]
        assert kinds[last_conv + 1 :] == [type(m) for m in plain_tower][last_conv + 1 :]
        # Zero offsets and mask logits: the regular grid, every point weighted sigmoid(0).
        pack = tower[last_conv]
        x = torch.randn(1, pack.conv.in_channels, 6, 7)
        expected = 0.5 * nn.functional.conv2d(x, pack.conv.weight, padding=1)
        if pack.conv.bias is not None:
            expected = expected + pack.conv.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(pack(x), expected)
    model.train()
    with EventStorage(0):
        losses = model(make_inputs([[[8, 8, 60, 70]], [[30, 10, 110, 80]]]))
    sum(losses.values()).backward()
    offset_grad = model.head.cls_subnet[last_conv].conv_offset.weight.grad
    assert offset_grad is not None and offset_grad.abs().sum() > 0
