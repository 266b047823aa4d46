"""
d2ext's deformable ResNet / ResNeXt (d2ext/modeling/backbone/deformable.py) without Detectron2's
compiled ops: MODEL.RESNETS.DEFORM_ON_PER_STAGE / DEFORM_MODULATED / DEFORM_NUM_GROUPS build
through every d2ext backbone builder; a block computes Detectron2's DeformBottleneckBlock
formula (checked against torchvision's deform_conv2d); VFNet's dcn_on_last_conv towers; a small
deformable VFNet (modulated, grouped, deformable head towers) traces, scripts, exports to ONNX
(DeformConv with its mask, opset 19) and runs under CPU autocast, giving its eager detections.
mmdetection parity of the same modules: tests/model_zoo/test_mmdet_zoo.py.
"""

import copy
import os

import pytest
import torch
from conftest import CONFIGS, CUDA, build_tiny_model
from torchvision.ops import deform_conv2d

# A narrow bottleneck ResNet-50 (16-wide stem, 32-wide res2 of 2 groups of 8, FrozenBN as the
# MMDet configs) with DCNv2 in res3-res5 and 2 offset groups.
DEFORMABLE_RESNET = {
    "MODEL.RESNETS.DEPTH": "50",
    "MODEL.RESNETS.STEM_OUT_CHANNELS": "16",
    "MODEL.RESNETS.RES2_OUT_CHANNELS": "32",
    "MODEL.RESNETS.NUM_GROUPS": "2",
    "MODEL.RESNETS.WIDTH_PER_GROUP": "8",
    "MODEL.RESNETS.STRIDE_IN_1X1": "False",
    "MODEL.RESNETS.NORM": "FrozenBN",
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": "[False, True, True, True]",
    "MODEL.RESNETS.DEFORM_MODULATED": "True",
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": "2",
}
# ... in the tiny VFNet config, with the head's DCNv2 tower convs.
TINY_DEFORMABLE = [
    item
    for pair in {
        **DEFORMABLE_RESNET,
        "MODEL.VFNET.DCN_ON_LAST_CONV": "True",
        "MODEL.DEVICE": "cpu",
    }.items()
    for item in pair
]
TINY_VFNET = os.path.join(CONFIGS, "Synthetic", "vfnet_R_18_FPN_tiny.yaml")


def _randomise_offsets(model, seed=0):
    """Random offset convs (zero at init: a plain conv) so the deformable sampling matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("conv2_offset", "conv_offset")):
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=g)
                    * 0.3
                    / module.weight[0].numel() ** 0.5
                )
                module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=g))


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("groups,deform_groups", [(1, 1), (4, 2)])
def test_block_is_detectron2s_deform_bottleneck(modulated, groups, deform_groups):
    """relu(conv3(relu(norm(deform_conv(relu(conv1(x)), offset, mask)))) + shortcut(x)), offsets
    (and sigmoid mask: the last third) from conv2_offset, computed with torchvision's op."""
    from d2ext.modeling.backbone import DeformBottleneckBlock

    torch.manual_seed(0)
    block = DeformBottleneckBlock(
        16,
        32,
        bottleneck_channels=8,
        stride=2,
        num_groups=groups,
        norm="BN",
        stride_in_1x1=False,
        deform_modulated=modulated,
        deform_num_groups=deform_groups,
    ).eval()
    _randomise_offsets(block)
    assert block.conv2_offset.out_channels == (27 if modulated else 18) * deform_groups
    x = torch.randn(2, 16, 11, 13)
    with torch.no_grad():
        y = torch.relu(block.conv1(x))
        om = block.conv2_offset(y)
        if modulated:
            o1, o2, m = torch.chunk(om, 3, dim=1)
            offset, mask = torch.cat((o1, o2), dim=1), m.sigmoid()
        else:
            offset, mask = om, None
        y = deform_conv2d(y, offset, block.conv2.weight, stride=2, padding=1, mask=mask)
        y = torch.relu(block.conv2.norm(y))
        expected = torch.relu(block.conv3(y) + block.shortcut(x))
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "builder",
    [
        "build_resnet_fpn_p6p7_backbone",
        "build_resnet_any_width_fpn_backbone",
        "build_resnet_fpn_bfp_backbone",
    ],
)
def test_every_d2ext_builder_builds_deformable_stages(builder):
    """Detectron2's own build_resnet_backbone would need detectron2._C for these keys."""
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import BACKBONE_REGISTRY

    from d2ext.config import get_cfg
    from d2ext.modeling.backbone import DeformBottleneckBlock

    cfg = get_cfg()
    cfg.merge_from_list([item for pair in DEFORMABLE_RESNET.items() for item in pair])
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.LIBRA.BFP_BASE_BACKBONE = "build_resnet_any_width_fpn_backbone"
    cfg.MODEL.LIBRA.BFP_REFINE_LEVEL = 1
    backbone = BACKBONE_REGISTRY.get(builder)(cfg, ShapeSpec(channels=3)).eval()
    blocks = [m for m in backbone.modules() if isinstance(m, DeformBottleneckBlock)]
    assert len(blocks) == 4 + 6 + 3
    assert all(b.conv2.groups == 2 and b.conv2_offset.out_channels == 54 for b in blocks)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 128))  # a multiple of every stride
    assert all(torch.isfinite(v).all() for v in out.values())


def test_deformable_stages_need_a_bottleneck_resnet():
    from detectron2.layers import ShapeSpec

    from d2ext.config import get_cfg
    from d2ext.modeling.backbone import build_resnet_any_width

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    with pytest.raises(ValueError, match="bottleneck ResNet"):
        build_resnet_any_width(cfg, ShapeSpec(channels=3))


def test_vfnet_dcn_on_last_conv_towers():
    from d2ext.modeling.backbone import DeformConvPack

    model = build_tiny_model(
        TINY_VFNET, "MODEL.VFNET.DCN_ON_LAST_CONV", "True", "MODEL.DEVICE", "cpu"
    )
    plain = build_tiny_model(TINY_VFNET, "MODEL.DEVICE", "cpu")
    for tower, plain_tower in (
        (model.head.cls_subnet, plain.head.cls_subnet),
        (model.head.bbox_subnet, plain.head.bbox_subnet),
    ):
        assert [type(m) for m in tower][:-3] == [type(m) for m in plain_tower][:-3]
        last = tower[len(tower) - 3]
        assert isinstance(last, DeformConvPack) and last.modulated
        assert last.conv_offset.out_channels == 27
        assert type(tower[len(tower) - 2]) is type(
            plain_tower[len(plain_tower) - 2]
        )  # the norm stays


# DCN v1 in the backbone (the GFL "dconv" rows), plain head towers.
TINY_DCN_V1 = [
    *TINY_DEFORMABLE,
    "MODEL.RESNETS.DEFORM_MODULATED",
    "False",
    "MODEL.VFNET.DCN_ON_LAST_CONV",
    "False",
]


@pytest.fixture(scope="module", params=["dcn_v2", "dcn_v1"])
def deformable_vfnet(request):
    from torch import nn

    model = build_tiny_model(
        TINY_VFNET, *(TINY_DEFORMABLE if request.param == "dcn_v2" else TINY_DCN_V1)
    )
    _randomise_offsets(model)
    with torch.no_grad():  # scores spread around the threshold (export_checks.detecting_model)
        g = torch.Generator().manual_seed(0)
        model.head.cls_score.weight.copy_(
            torch.randn(model.head.cls_score.weight.shape, generator=g) * 0.05
        )
        nn.init.constant_(model.head.cls_score.bias, -2.2)
    return model.eval()


def _detections(model, image):
    with torch.no_grad():
        inst = model([{"image": image, "height": image.shape[1], "width": image.shape[2]}])[0][
            "instances"
        ]
    return inst.pred_boxes.tensor, inst.scores, inst.pred_classes


def _image(size=(90, 117), seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, *size, generator=g) * 255).round()


def _assert_same(expected, got, what):
    boxes, scores, classes = expected
    assert len(scores) > 0, what
    order, got_order = scores.argsort(descending=True), got[1].argsort(descending=True)
    torch.testing.assert_close(got[1][got_order], scores[order], rtol=0, atol=1e-4, msg=what)
    assert torch.equal(torch.as_tensor(got[2])[got_order], classes[order]), what
    assert (torch.as_tensor(got[0])[got_order] - boxes[order]).abs().max() <= 1e-2, what


def test_deformable_model_traces_scripts_and_exports(deformable_vfnet, tmp_path):
    from d2ext.export import (
        export_onnx,
        export_torchscript_tracing,
        postprocess_scripted,
        script_model,
    )

    model = deformable_vfnet
    image = _image()
    expected = _detections(model, image)
    traced = export_torchscript_tracing(model, image)
    with torch.no_grad():
        out = traced(image)
    _assert_same(expected, (out[0], out[2], out[1]), "tracing")
    scripted = script_model(model)
    with torch.no_grad():
        inst = postprocess_scripted(scripted(({"image": image},))[0], *image.shape[1:])
    _assert_same(expected, (inst.pred_boxes.tensor, inst.scores, inst.pred_classes), "scripting")
    ort = pytest.importorskip("onnxruntime")
    path = str(tmp_path / "model.onnx")
    names = export_onnx(model, image, path)
    got = dict(
        zip(
            names,
            ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
                None, {"image": image.numpy()}
            ),
        )
    )
    _assert_same(
        expected,
        tuple(torch.as_tensor(got[k]) for k in ("pred_boxes", "scores", "pred_classes")),
        "onnx",
    )


def test_deformable_model_runs_under_cpu_autocast(deformable_vfnet):
    """bfloat16 autocast: DeformConv2d runs in float32 inside (d2ext.layers.deform_conv)."""
    image = _image()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        boxes, scores, _ = _detections(deformable_vfnet, image)
    assert len(scores) > 0 and torch.isfinite(boxes).all()


def test_deformable_model_trains_a_step_under_cpu_autocast():
    """A training step under bfloat16 autocast (as AMP training on the CPU): finite losses, and
    gradients reach the backbone's and the head's offset convs."""
    from detectron2.structures import Boxes, Instances

    model = build_tiny_model(TINY_VFNET, *TINY_DEFORMABLE)
    _randomise_offsets(model)
    model.train()
    image = _image((96, 128))
    gt = Instances((96, 128))
    gt.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 120.0, 90.0]]))
    gt.gt_classes = torch.tensor([0, 2])
    from detectron2.utils.events import EventStorage

    with EventStorage(0), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model([{"image": image, "instances": gt}])
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total.backward()
    offsets = {
        n: m for n, m in model.named_modules() if n.endswith(("conv2_offset", "conv_offset"))
    }
    assert any(n.startswith("backbone") for n in offsets) and any(
        n.startswith("head") for n in offsets
    )
    for name, module in offsets.items():
        assert module.weight.grad is not None and torch.isfinite(module.weight.grad).all(), name
        assert module.weight.grad.abs().sum() > 0, name


@pytest.mark.parametrize("device", [CUDA])  # the CPU is the reference
@pytest.mark.parametrize("groups,deform_groups", [(1, 1), (4, 2)])
def test_deformable_resnet_on_device(device, groups, deform_groups):
    """The deformable stages on each device (CUDA: torchvision's kernel; `make gpu-test`) give
    the CPU model's features, forward and backward (offset-conv gradients included)."""
    from detectron2.modeling.backbone.resnet import BasicStem, ResNet

    from d2ext.modeling.backbone import make_resnet_stages

    torch.manual_seed(0)
    stages = make_resnet_stages(
        50,
        in_channels=16,
        out_channels=32,
        num_groups=groups,
        width_per_group=16 // groups,
        stride_in_1x1=False,
        norm="BN",
        deform_on_per_stage=(False, True, True, True),
        deform_modulated=True,
        deform_num_groups=deform_groups,
    )
    cpu = ResNet(BasicStem(3, 16, norm="BN"), stages, out_features=["res3", "res5"]).eval()
    _randomise_offsets(cpu)
    model = copy.deepcopy(cpu).to(device)
    x = torch.randn(2, 3, 70, 90)
    outs = [m(x.to(m.stem.conv1.weight.device)) for m in (cpu, model)]
    for name in ("res3", "res5"):
        torch.testing.assert_close(outs[1][name].cpu(), outs[0][name], rtol=1e-4, atol=1e-4)
    for m, out in zip((cpu, model), outs):
        sum(v.square().mean() for v in out.values()).backward()
    grad = [m.res4[0].conv2_offset.weight.grad.cpu() for m in (cpu, model)]
    torch.testing.assert_close(grad[1], grad[0], rtol=1e-3, atol=1e-5)
