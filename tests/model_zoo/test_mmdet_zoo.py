"""
The rest of mmdetection 3.3's zoo for d2ext's methods (MODEL_ZOO.md): ResNet-101, ResNeXt-101
(32x4d, 64x4d: grouped 3x3 convs), deformable stages (DCN v1 ``dconv``, modulated DCN v2
``mdconv``) and VFNet's deformable last tower conv (``dcn_on_last_conv``).

- Every configs/MMDet/ config of these rows converts the state dict of mmdetection's own model
  of its source config, key for key: every file key is renamed or dropped by a stated rule, the
  converted dict loads with ``strict=True`` and fills every parameter and buffer. Both models are
  built on the meta device (shapes only), so the 16 rows cost about a second each.
- One representative per backbone family is compared with mmdetection's model of the same random
  weights, saved in mmdetection's format and loaded through ``MODEL.WEIGHTS``: input, FPN (+ BFP)
  features and raw head outputs (RPN for Libra) on an image whose sides are not multiples of 32.
  R-101 + DCN v1 (one weight group), ResNeXt + DCN v1 (32 weight groups), ResNeXt + DCNv2 with
  the DCNv2 tower convs (modulated, masks), ResNeXt-101 64x4d in Libra R-CNN; d2ext's side runs
  whatever CPU path d2ext.layers.DeformConv2d takes (its compiled op, or grid_sample /
  torchvision's op without it). Then, as for the R-50 rows (tests/model_zoo/test_mmdet_parity.py),
  the detections after post-processing and, for the dense families, the training losses (Libra
  R-CNN's sample their proposals at random: tests/model_zoo/test_mmdet_libra_parity.py compares
  them with the sampling fixed, on R-50). Libra RetinaNet (one row, R-50) is compared in full in
  tests/model_zoo/test_mmdet_libra_retinanet_parity.py.

mmcv's deformable convolutions are compiled code that the pure-Python mmcv (mmcv-lite) does not
have: inside this test setup mmcv's ``deform_conv2d`` and ``modulated_deform_conv2d`` (called by
its ``DCN`` / ``DCNv2`` packs) are stood in by ``torchvision.ops.deform_conv2d``
(tests/model_zoo/mmdet_oracle.py), the op d2ext's DeformConv2d reproduces; mmcv's offset layout
(y, x per kernel point) and DCNv2's split of the offset conv output (offsets = first two thirds,
sigmoid mask = last third) are mmdetection's own code. What the comparison shows is therefore
the model structure and the weight mapping, not the agreement of mmcv's CUDA kernels with
torchvision's.

Tolerance: float32, <= 1e-5 relative to the largest magnitude of each tensor (measured values in
MODEL_ZOO.md).
"""

import logging
import os
import re

import pytest
import torch
import yaml
from conftest import CONFIGS
from mmdet_oracle import build_random_mmdet_model, import_mmdet, mmdet_config, save_mmdet_checkpoint
from test_mmdet_parity import (
    MODELS,
    assert_same_detections,
    assert_same_losses,
    d2_inputs,
    d2ext_model,
    mm_inputs,
    rel_diff,
)

# d2ext config (configs/MMDet/<name>.yaml, .py twin) -> mmdetection 3.3 config.
ZOO = {
    "atss_r101_fpn_1x_coco": "atss/atss_r101_fpn_1x_coco.py",
    "gfl_r50_fpn_ms-2x_coco": "gfl/gfl_r50_fpn_ms-2x_coco.py",
    "gfl_r101_fpn_ms-2x_coco": "gfl/gfl_r101_fpn_ms-2x_coco.py",
    "gfl_r101-dconv-c3-c5_fpn_ms-2x_coco": "gfl/gfl_r101-dconv-c3-c5_fpn_ms-2x_coco.py",
    "gfl_x101-32x4d_fpn_ms-2x_coco": "gfl/gfl_x101-32x4d_fpn_ms-2x_coco.py",
    "gfl_x101-32x4d-dconv-c4-c5_fpn_ms-2x_coco": "gfl/gfl_x101-32x4d-dconv-c4-c5_fpn_ms-2x_coco.py",
    "vfnet_r50_fpn_ms-2x_coco": "vfnet/vfnet_r50_fpn_ms-2x_coco.py",
    "vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco": "vfnet/vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco.py",
    "vfnet_r101_fpn_1x_coco": "vfnet/vfnet_r101_fpn_1x_coco.py",
    "vfnet_r101_fpn_ms-2x_coco": "vfnet/vfnet_r101_fpn_ms-2x_coco.py",
    "vfnet_r101-mdconv-c3-c5_fpn_ms-2x_coco": "vfnet/vfnet_r101-mdconv-c3-c5_fpn_ms-2x_coco.py",
    "vfnet_x101-32x4d-mdconv-c3-c5_fpn_ms-2x_coco": "vfnet/vfnet_x101-32x4d-mdconv-c3-c5_fpn_ms-2x_coco.py",
    "vfnet_x101-64x4d-mdconv-c3-c5_fpn_ms-2x_coco": "vfnet/vfnet_x101-64x4d-mdconv-c3-c5_fpn_ms-2x_coco.py",
    "libra-faster-rcnn_r101_fpn_1x_coco": "libra_rcnn/libra-faster-rcnn_r101_fpn_1x_coco.py",
    "libra-faster-rcnn_x101-64x4d_fpn_1x_coco": "libra_rcnn/libra-faster-rcnn_x101-64x4d_fpn_1x_coco.py",
    # Compared in full (detections, losses): tests/model_zoo/test_mmdet_libra_retinanet_parity.py.
    "libra-retinanet_r50_fpn_1x_coco": "libra_rcnn/libra-retinanet_r50_fpn_1x_coco.py",
}
# The R-50 1x rows (tests/model_zoo/test_mmdet_parity.py, test_mmdet_libra_parity.py).
R50_1X = {
    "atss_r50_fpn_1x_coco": "atss/atss_r50_fpn_1x_coco.py",
    "gfl_r50_fpn_1x_coco": "gfl/gfl_r50_fpn_1x_coco.py",
    "vfnet_r50_fpn_1x_coco": "vfnet/vfnet_r50_fpn_1x_coco.py",
    "libra-faster-rcnn_r50_fpn_1x_coco": "libra_rcnn/libra-faster-rcnn_r50_fpn_1x_coco.py",
}
# One per backbone family: (d2ext config, what it covers).
FAMILIES = {
    "r101-dcn": "gfl_r101-dconv-c3-c5_fpn_ms-2x_coco",
    "x101-32x4d-dcn": "gfl_x101-32x4d-dconv-c4-c5_fpn_ms-2x_coco",
    "x101-32x4d-mdcn-head-dcn": "vfnet_x101-32x4d-mdconv-c3-c5_fpn_ms-2x_coco",
    "x101-64x4d-libra": "libra-faster-rcnn_x101-64x4d_fpn_1x_coco",
}
# Sides not multiples of 32; small, since the CPU deformable convs of both libraries are slow.
IMAGE_SIZE = (90, 117)


def _d2ext_cfg(name, device="cpu"):
    from d2ext.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "MMDet", name + ".yaml"))
    cfg.MODEL.DEVICE = device
    return cfg


@pytest.mark.parametrize("name", sorted(ZOO))
def test_checkpoint_of_every_row_converts_key_for_key(name):
    """mmdetection's model of the source config and the d2ext config's model, both on the meta
    device: the file's keys all convert (no key left over, none missing, shapes equal) and load
    with strict=True."""
    from detectron2.modeling import build_model

    from d2ext.checkpoint.conversion import _rename
    from d2ext.checkpoint.mmdet import convert_mmdet_checkpoint, mmdet_table

    import_mmdet()
    from mmdet.registry import MODELS

    mm_cfg = mmdet_config(ZOO[name])
    mm_cfg.model.backbone.init_cfg = None
    with torch.device("meta"):
        state = MODELS.build(mm_cfg.model).state_dict()
        model = build_model(_d2ext_cfg(name, device="meta"))
    target = model.state_dict()
    table = mmdet_table(state, target)
    unmapped = [k for k in state if _rename(table, k) is None]
    assert not unmapped, unmapped
    dropped = {k for k in state if isinstance(_rename(table, k), tuple)}
    assert all(k.endswith(("num_batches_tracked", ".project")) for k in dropped), sorted(dropped)[
        :5
    ]
    converted = convert_mmdet_checkpoint({"state_dict": state}, target)
    assert set(converted) == set(target)
    result = model.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    # The backbone the row needs: ResNeXt's grouped convs and the deformable stages are there.
    backbone = mm_cfg.model.backbone
    n_offset = sum(k.endswith("conv2_offset.weight") for k in target)
    stages = backbone.get("stage_with_dcn", (False,) * 4) if backbone.get("dcn") else (False,) * 4
    assert n_offset == sum(
        n for n, on in zip((3, 4, 23 if backbone.depth == 101 else 6, 3), stages) if on
    )
    groups = backbone.get("groups", 1)
    conv2 = target[next(k for k in target if k.endswith("res2.0.conv2.weight"))]
    assert conv2.shape[1] == (4 if groups > 1 else 64)
    head_dcn = bool(mm_cfg.model.get("bbox_head", {}).get("dcn_on_last_conv", False))
    assert any(re.search(r"_subnet\.\d+\.conv_offset", k) for k in target) == head_dcn


def _metafile_weights():
    import mmdet

    weights = {}
    for method in ("atss", "gfl", "vfnet", "libra_rcnn"):
        path = os.path.join(
            os.path.dirname(mmdet.__file__), ".mim", "configs", method, "metafile.yml"
        )
        with open(path) as f:
            for entry in yaml.safe_load(f)["Models"]:
                ap = [
                    r["Metrics"]["box AP"]
                    for r in entry["Results"]
                    if r["Task"] == "Object Detection"
                ]
                weights[entry["Name"]] = (entry["Weights"], ap[0])
    return weights


def test_model_zoo_serves_every_row_with_the_published_file():
    """_CHECKPOINTS (d2ext.model_zoo.get_checkpoint_url, get(trained=True)) holds each row's URL
    exactly as mmdetection 3.3's metafile.yml publishes it."""
    from d2ext import model_zoo

    import_mmdet()

    published = _metafile_weights()
    for name in sorted({**ZOO, **R50_1X}):
        url = model_zoo.get_checkpoint_url(f"MMDet/{name}.yaml")
        assert url == published[name][0], name
        assert model_zoo.get_config(f"MMDet/{name}.yaml", trained=True).MODEL.WEIGHTS == url
        assert model_zoo.get_config(f"MMDet/{name}.py", trained=True).train.init_checkpoint == url


def test_a_deformable_checkpoint_in_a_plain_config_is_an_error(tmp_path):
    """A DCN checkpoint loaded into the config without DCN would fill the plain convs with the
    deformable weights (same shapes): an error naming the offset convs instead."""
    from detectron2.modeling import build_model

    from d2ext.checkpoint import ConversionError
    from d2ext.checkpoint.mmdet import convert_mmdet_checkpoint

    import_mmdet()
    from mmdet.registry import MODELS

    mm_cfg = mmdet_config(ZOO["vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco"])
    with torch.device("meta"):
        state = MODELS.build(mm_cfg.model).state_dict()
        plain = build_model(_d2ext_cfg("vfnet_r50_fpn_ms-2x_coco", device="meta")).state_dict()
        cfg = _d2ext_cfg("vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco", device="meta")
        cfg.MODEL.VFNET.DCN_ON_LAST_CONV = False
        no_head_dcn = build_model(cfg).state_dict()
    with pytest.raises(ConversionError, match=r"res3\.0\.conv2_offset"):
        convert_mmdet_checkpoint({"state_dict": state}, plain)
    with pytest.raises(ConversionError, match=r"head\.bbox_subnet\.6\.conv_offset"):
        convert_mmdet_checkpoint({"state_dict": state}, no_head_dcn)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    import_mmdet()
    logging.getLogger("mmengine").setLevel(logging.ERROR)
    name = FAMILIES[request.param]
    mm_model, _ = build_random_mmdet_model(ZOO[name], init_weights=False)
    path = str(tmp_path_factory.mktemp("mmdet") / f"{name}.pth")
    save_mmdet_checkpoint(mm_model, path)
    model = d2ext_model(f"MMDet/{name}.yaml", path)
    return request.param, mm_model, model, path


def _image():
    g = torch.Generator().manual_seed(2)
    return [(torch.rand(3, *IMAGE_SIZE, generator=g) * 255).to(torch.uint8)]


def _assert_levels(mm_levels, levels, what):
    assert len(mm_levels) == len(levels), what
    for level, (a, b) in enumerate(zip(mm_levels, levels)):
        assert a.shape == b.shape, f"{what} level {level}: {a.shape} vs {b.shape}"
        assert rel_diff(a, b) <= 1e-5, f"{what} level {level}: {rel_diff(a, b)}"


@torch.no_grad()
def test_features_and_head_outputs_per_backbone_family(family):
    name, mm_model, model, _ = family
    imgs = _image()
    mm_x = mm_inputs(mm_model, imgs)["inputs"]
    x = model.preprocess_image(d2_inputs(imgs)).tensor
    assert x.shape == mm_x.shape == (1, 3, 96, 128)
    torch.testing.assert_close(x, mm_x, rtol=0, atol=0)
    mm_features = mm_model.extract_feat(mm_x)
    features = model.backbone(x)
    if hasattr(model, "proposal_generator"):  # Libra R-CNN: FPN + BFP P2-P6, RPN head
        _assert_levels(
            mm_features, [features[f] for f in ("p2", "p3", "p4", "p5", "p6")], f"{name} features"
        )
        rpn = model.proposal_generator
        outputs = rpn.rpn_head([features[f] for f in rpn.in_features])
        mm_outputs = mm_model.rpn_head(mm_features)
    else:
        features = [features[f] for f in model.head_in_features]
        _assert_levels(mm_features, features, f"{name} features")
        outputs = model.head(features)
        if len(outputs) == 3:  # VFNet: mmdetection returns no initial boxes in eval mode
            outputs = (outputs[0], outputs[2])
        mm_outputs = mm_model.bbox_head(mm_features)
    assert len(outputs) == len(mm_outputs)
    for i, (mm_levels, levels) in enumerate(zip(mm_outputs, outputs)):
        _assert_levels(mm_levels, levels, f"{name} output {i}")


def test_convert_tool_per_backbone_family(family, tmp_path):
    """d2ext-convert-mmdet-checkpoint on the family's mmdetection file: the Detectron2-format file
    it writes loads, with Detectron2's own checkpointer, into the weights MODEL.WEIGHTS gives."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from d2ext.tools.convert_mmdet_checkpoint import main

    name, _, model, path = family
    out = str(tmp_path / "converted.pth")
    main([path, out, "--config-file", os.path.join(CONFIGS, "MMDet", FAMILIES[name] + ".yaml")])
    converted = build_model(_d2ext_cfg(FAMILIES[name]))
    DetectionCheckpointer(converted).load(out)
    expected = model.state_dict()
    assert converted.state_dict().keys() == expected.keys()
    for key, value in converted.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_imagenet_resnext_file_initialises_the_x101_configs(tmp_path):
    """The X-101 configs' MODEL.WEIGHTS (open-mmlab://resnext101_32x4d: mmdetection's ResNeXt
    layout, here also wrapped in {"state_dict": ..., "meta": ...} as mmengine saves files) load
    into the ResNeXt through the torchvision table: every backbone tensor arrives unchanged."""
    from detectron2.modeling import build_model

    from d2ext.checkpoint import Checkpointer

    import_mmdet()
    from mmdet.registry import MODELS

    cfg = mmdet_config(ZOO["gfl_x101-32x4d_fpn_ms-2x_coco"]).model.backbone
    cfg.init_cfg = None
    torch.manual_seed(0)
    state = MODELS.build(cfg).state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = str(tmp_path / "resnext101_32x4d.pth")
    torch.save({"state_dict": state, "meta": {}}, path)
    model = build_model(_d2ext_cfg("gfl_x101-32x4d_fpn_ms-2x_coco"))
    Checkpointer(model).load(path)
    loaded = model.backbone.bottom_up.state_dict()
    assert torch.equal(
        loaded["res4.22.conv2.weight"], state["layer3.22.conv2.weight"]
    )  # (512, 16, 3, 3)
    assert torch.equal(
        loaded["res2.0.shortcut.norm.running_var"], state["layer1.0.downsample.1.running_var"]
    )
    assert torch.equal(loaded["stem.conv1.norm.weight"], state["bn1.weight"])


# The dense families' losses: mmdetection's loss names -> d2ext's, as for the R-50 rows.
FAMILY_LOSSES = {
    "r101-dcn": MODELS["gfl"][2],
    "x101-32x4d-dcn": MODELS["gfl"][2],
    "x101-32x4d-mdcn-head-dcn": MODELS["vfnet"][2],
}


def test_detections_and_losses_per_backbone_family(family):
    name, mm_model, model, _ = family
    with torch.no_grad():
        assert_same_detections(mm_model, model, 1e-5, name)
    if name in FAMILY_LOSSES:
        assert_same_losses(mm_model, model, FAMILY_LOSSES[name], name)
