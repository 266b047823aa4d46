"""
The configs/MMDet/ configs load mmdetection checkpoints (converted on load by d2ext's
Checkpointer) and reproduce mmdetection 3.3's own models: input normalisation and padding,
backbone + FPN features, raw head outputs, detections after post-processing and training losses.

mmdetection is the oracle, imported by the tests only (tests/model_zoo/mmdet_oracle.py: its model
classes are built from its shipped configs with random weights and saved in its checkpoint
format; mmcv's compiled ops are stood in by torchvision's nms / deform_conv2d / roi_align, and the
mmcv version assert of mmdet 3.3 is passed by reporting mmcv-lite 2.2.0 as 2.1.0 during that
import). Skipped when mmdet is not installed; `make test` installs it (requirements-test.txt).

Tolerances: float32 throughout. Features and raw outputs <= 1e-5 relative to the largest
magnitude of the tensor; detections: same count, classes and scores (1e-6 relative), boxes
within 1e-2 px; losses <= 1e-5 relative. The differences measured when these were written are
in MODEL_ZOO.md.
"""

import logging
import os

import pytest
import torch
from conftest import CONFIGS
from mmdet_oracle import build_random_mmdet_model, import_mmdet, save_mmdet_checkpoint

# (mmdetection config, d2ext config, {mmdet loss name: d2ext loss name})
MODELS = {
    "atss": (
        "atss/atss_r50_fpn_1x_coco.py",
        "MMDet/atss_r50_fpn_1x_coco.yaml",
        {"loss_cls": "loss_cls", "loss_bbox": "loss_box_reg", "loss_centerness": "loss_centerness"},
    ),
    "gfl": (
        "gfl/gfl_r50_fpn_1x_coco.py",
        "MMDet/gfl_r50_fpn_1x_coco.yaml",
        {"loss_cls": "loss_cls", "loss_bbox": "loss_box_reg", "loss_dfl": "loss_dfl"},
    ),
    "vfnet": (
        "vfnet/vfnet_r50_fpn_1x_coco.py",
        "MMDet/vfnet_r50_fpn_1x_coco.yaml",
        {"loss_cls": "loss_cls", "loss_bbox": "loss_box_init", "loss_bbox_rf": "loss_box_refine"},
    ),
}
# Sizes not divisible by 32 (mmdetection and d2ext both pad to 32).
IMAGE_SIZES = [(200, 300), (190, 257)]
# (x1, y1, x2, y2), class, per image. Fractional coordinates: a GT centre exactly between two
# anchor centres makes them tie in ATSS's k-nearest candidates, which mmdetection breaks by
# torch.topk's unspecified order and d2ext by the lower index (a difference of tie-breaking
# only, not tested here).
GT = [
    (
        [[20.3, 30.6, 140.9, 170.2], [150.7, 40.1, 290.4, 120.8], [60.2, 100.9, 110.6, 189.3]],
        [3, 17, 79],
    ),
    ([[10.4, 12.7, 200.1, 180.6], [120.8, 20.3, 180.2, 60.9]], [0, 41]),
]


def rel_diff(a, b):
    return ((a - b).abs().max() / a.abs().max().clamp(min=1e-12)).item()


def d2ext_model(config, weights, *opts):
    from detectron2.modeling import build_model

    from d2ext.checkpoint import Checkpointer
    from d2ext.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights, *opts])
    model = build_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    return model.eval()


def images():
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(3, h, w, generator=g) * 255).to(torch.uint8) for h, w in IMAGE_SIZES]


_BUILT = {}


def built_pair(name, tmp_path_factory):
    """(name, mmdetection model, d2ext model loaded from its checkpoint, checkpoint path),
    built once per test session."""
    if name not in _BUILT:
        import_mmdet()
        logging.getLogger("mmengine").setLevel(logging.ERROR)
        mm_config, config, _ = MODELS[name]
        mm_model, _ = build_random_mmdet_model(mm_config)
        path = str(tmp_path_factory.mktemp("mmdet") / f"{name}.pth")
        save_mmdet_checkpoint(mm_model, path)
        _BUILT[name] = (name, mm_model, d2ext_model(config, path), path)
    return _BUILT[name]


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request, tmp_path_factory):
    return built_pair(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def atss_pair(tmp_path_factory):
    return built_pair("atss", tmp_path_factory)


def mm_inputs(mm_model, imgs, with_gt=False):
    """mmdetection's preprocessed batch: BGR uint8 in, as its LoadImageFromFile gives."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    samples = []
    for img, (boxes, classes) in zip(imgs, GT):
        sample = DetDataSample(
            metainfo={"img_shape": tuple(img.shape[1:]), "scale_factor": (1.0, 1.0)}
        )
        if with_gt:
            sample.gt_instances = InstanceData(
                bboxes=torch.tensor(boxes), labels=torch.tensor(classes)
            )
        samples.append(sample)
    return mm_model.data_preprocessor(
        {"inputs": [i.flip(0) for i in imgs], "data_samples": samples}, with_gt
    )


def d2_inputs(imgs, with_gt=False):
    from detectron2.structures import Boxes, Instances

    batch = []
    for img, (boxes, classes) in zip(imgs, GT):
        h, w = img.shape[1:]
        item = {"image": img, "height": h, "width": w}
        if with_gt:
            item["instances"] = Instances(
                (h, w), gt_boxes=Boxes(torch.tensor(boxes)), gt_classes=torch.tensor(classes)
            )
        batch.append(item)
    return batch


@torch.no_grad()
def test_input_features_and_head_outputs(pair):
    name, mm_model, model, _ = pair
    imgs = images()
    mm_x = mm_inputs(mm_model, imgs)["inputs"]
    x = model.preprocess_image(d2_inputs(imgs)).tensor
    # RGB, mean/std and padding to 32 (not Detectron2's 128 for P7).
    assert x.shape == mm_x.shape == (2, 3, 224, 320)
    torch.testing.assert_close(x, mm_x, rtol=0, atol=0)

    mm_features = mm_model.extract_feat(mm_x)
    features = model.backbone(x)
    features = [features[f] for f in model.head_in_features]
    assert len(features) == len(mm_features) == 5
    for level, (a, b) in enumerate(zip(mm_features, features)):
        assert a.shape == b.shape
        assert rel_diff(a, b) <= 1e-5, f"{name} P{level + 3}: {rel_diff(a, b)}"

    outputs = model.head(features)
    if name == "vfnet":  # mmdetection's VFNetHead returns no initial boxes in eval mode
        outputs = (outputs[0], outputs[2])
    mm_outputs = mm_model.bbox_head(mm_features)
    assert len(mm_outputs) == len(outputs)
    for output, (mm_levels, levels) in enumerate(zip(mm_outputs, outputs)):
        for level, (a, b) in enumerate(zip(mm_levels, levels)):
            assert a.shape == b.shape
            assert rel_diff(a, b) <= 1e-5, f"{name} output {output} level {level}: {rel_diff(a, b)}"


def assert_same_detections(mm_model, model, score_rtol, name):
    """mmdetection's predict vs d2ext's inference on images(): 100 detections per image, the same
    classes and scores (within score_rtol), boxes within 1e-2 px (both sorted by score)."""
    imgs = images()
    data = mm_inputs(mm_model, imgs)
    mm_results = mm_model.predict(data["inputs"], data["data_samples"], rescale=True)
    results = model(d2_inputs(imgs))
    for mm_result, result in zip(mm_results, results):
        mm_det, det = mm_result.pred_instances, result["instances"]
        # Random weights: thousands of candidates pass the threshold, NMS and top-100 matter.
        assert len(det) == len(mm_det) == 100
        mm_order = mm_det.scores.argsort(descending=True, stable=True)
        order = det.scores.argsort(descending=True, stable=True)
        torch.testing.assert_close(
            det.scores[order], mm_det.scores[mm_order], rtol=score_rtol, atol=0
        )
        assert torch.equal(det.pred_classes[order], mm_det.labels[mm_order])
        box_diff = (det.pred_boxes.tensor[order] - mm_det.bboxes[mm_order]).abs().max().item()
        assert box_diff <= 1e-2, f"{name}: boxes differ by {box_diff} px"


@torch.no_grad()
def test_detections(pair):
    name, mm_model, model, _ = pair
    assert_same_detections(mm_model, model, 1e-6, name)


def assert_same_losses(mm_model, model, loss_names, name, rtol=1e-5):
    """mmdetection's loss vs d2ext's training losses on images() with GT: each mmdetection loss
    (summed over levels where it is a list) within rtol of the d2ext loss it is named to."""
    from detectron2.utils.events import EventStorage

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
    for mm_name, d2_name in loss_names.items():
        mm_value = mm_losses[mm_name]
        mm_value = sum(mm_value) if isinstance(mm_value, (list, tuple)) else mm_value
        diff = rel_diff(mm_value.detach(), losses[d2_name].detach())
        assert diff <= rtol, (
            f"{name} {mm_name}: {mm_value.item()} vs {losses[d2_name].item()} ({diff})"
        )
    assert set(losses) == set(loss_names.values())


def test_training_losses(pair):
    name, mm_model, model, _ = pair
    assert_same_losses(mm_model, model, MODELS[name][2], name)


def test_wrong_settings_are_caught(atss_pair):
    """The comparisons above can fail: a ReLU before P7 changes P7, official ATSS's scores change
    the detections, a bias in the towers is a checkpoint key the file cannot fill."""
    from d2ext.checkpoint import ConversionError

    name, mm_model, _, path = atss_pair
    imgs = images()
    with torch.no_grad():
        x = mm_inputs(mm_model, imgs)["inputs"]
        relu_p7 = d2ext_model(MODELS[name][1], path, "MODEL.FPN.RELU_BEFORE_P7", True)
        assert rel_diff(mm_model.extract_feat(x)[4], relu_p7.backbone(x)["p7"]) > 1e-2
        sqrt = d2ext_model(MODELS[name][1], path, "MODEL.ATSS.TEST_SCORE", "sqrt")
        mm_scores = mm_model.predict(x, mm_inputs(mm_model, imgs)["data_samples"])[
            0
        ].pred_instances.scores
        assert not torch.allclose(sqrt(d2_inputs(imgs))[0]["instances"].scores, mm_scores)
    with pytest.raises(ConversionError, match=r"head\.cls_subnet\.0\.bias"):
        d2ext_model(MODELS[name][1], path, "MODEL.ATSS.TOWER_CONV_BIAS", True)


def test_unmapped_keys_are_reported(atss_pair, tmp_path, caplog):
    name, mm_model, _, path = atss_pair
    checkpoint = torch.load(path)
    checkpoint["state_dict"]["bbox_head.extra_conv.weight"] = torch.zeros(1)
    changed = str(tmp_path / "extra.pth")
    torch.save(checkpoint, changed)
    # The handler goes on the logger itself: Detectron2's setup_logger(name="d2ext"), run by
    # in-process tool tests, stops "d2ext.*" records from propagating to caplog's root handler.
    conversion_logger = logging.getLogger("d2ext.checkpoint.conversion")
    conversion_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="d2ext.checkpoint.conversion"):
            d2ext_model(MODELS[name][1], changed)
    finally:
        conversion_logger.removeHandler(caplog.handler)
    assert "bbox_head.extra_conv.weight" in caplog.text


def test_convert_tool(atss_pair, tmp_path):
    """tools/convert_mmdet_checkpoint.py writes a Detectron2-format file that Detectron2's own
    checkpointer loads into the same model, bit-identical."""
    import sys

    from conftest import REPO_ROOT, tiny_cfg
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    name, _, model, path = atss_pair
    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        import convert_mmdet_checkpoint
    finally:
        sys.path.pop(0)
    out = str(tmp_path / "converted.pth")
    config = os.path.join(CONFIGS, MODELS[name][1])
    convert_mmdet_checkpoint.main([path, out, "--config-file", config])
    converted = build_model(tiny_cfg(config, "MODEL.DEVICE", "cpu"))
    DetectionCheckpointer(converted).load(out)
    expected = model.state_dict()
    assert converted.state_dict().keys() == expected.keys()
    for key, value in converted.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_published_style_file_loads(atss_pair, tmp_path):
    """The published v2.0 files are torch's legacy (pre-zip) format (mmdetection's
    publish_model.py) with mmdetection 2's metadata: such a file loads through MODEL.WEIGHTS
    into the same weights as the zip file."""
    name, mm_model, model, _ = atss_pair
    meta = {
        "mmdet_version": "2.0.0",
        "mmcv_version": "0.5.1",
        "config": "model = dict(type='ATSS')",
        "CLASSES": ("person", "bicycle"),
        "epoch": 12,
        "iter": 87960,
        "time": "Sun Feb  9 12:00:00 2020",
        "hook_msgs": {"last_ckpt": "work_dirs/epoch_12.pth"},
    }
    path = str(tmp_path / "published.pth")
    state = mm_model.state_dict()  # an OrderedDict with its _metadata, as mmcv saved it
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=False)
    with open(path, "rb") as f:
        assert f.read(2) != b"PK"  # not a zip
    loaded = d2ext_model(MODELS[name][1], path)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_torchvision_resnet_loads():
    """torchvision's ImageNet ResNet-50 layout loads into the MMDet configs' ResNet (training
    init): res2..res5 equal torchvision's layer1..layer4 with BN in eval mode."""
    import torchvision
    from detectron2.modeling import build_model

    from d2ext.checkpoint import Checkpointer
    from d2ext.config import get_cfg

    torch.manual_seed(0)
    tv = torchvision.models.resnet50()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.3, 0.8)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    tv.eval()
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "MMDet/atss_r50_fpn_1x_coco.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"tv_r50_{os.getpid()}.pth")
    torch.save(tv.state_dict(), path)
    try:
        Checkpointer(model).load(path)
    finally:
        os.remove(path)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = tv.layer4(
            tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))
        )
        got = model.backbone.bottom_up(x)["res5"]
    assert rel_diff(expected, got) <= 1e-5
    # The affine parameters of the unfrozen stages are trainable, those of stem/res2 are not.
    bottom_up = model.backbone.bottom_up
    assert isinstance(bottom_up.res3[0].conv1.norm.weight, torch.nn.Parameter)
    assert bottom_up.res3[0].conv1.norm.weight.requires_grad
    assert not any(p.requires_grad for p in bottom_up.res2.parameters())


def test_keys_that_map_to_one_level_are_an_error(atss_pair, tmp_path):
    """ "scales.1.scale" and "scales.01.scale" are different file keys for the same level: an
    error naming both, never the later one silently winning."""
    from d2ext.checkpoint import ConversionError

    name, _, _, path = atss_pair
    checkpoint = torch.load(path)
    state = checkpoint["state_dict"]
    state["bbox_head.scales.01.scale"] = state["bbox_head.scales.1.scale"] * 2
    changed = str(tmp_path / "twice.pth")
    torch.save(checkpoint, changed)
    with pytest.raises(
        ConversionError,
        match=r"scales\.1\.scale.*scales\.01\.scale|scales\.01\.scale.*scales\.1\.scale",
    ):
        d2ext_model(MODELS[name][1], changed)


def test_demo_predictor_and_export_run_an_mmdet_checkpoint(atss_pair, tmp_path):
    """MODEL.WEIGHTS <mmdetection .pth> works in every tool, as in train_net --eval-only: the
    predictor holds the converted weights, the demo draws with them, the export writes a model."""
    import cv2
    import numpy as np

    from d2ext.config import load_config
    from d2ext.engine import Predictor
    from d2ext.tools import demo, export_model

    name, _, model, path = atss_pair
    config = os.path.join(CONFIGS, MODELS[name][1])
    small = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192"]
    cfg = load_config(config, ["MODEL.WEIGHTS", path, *small])
    predictor = Predictor(cfg)
    for key, value in model.state_dict().items():
        assert torch.equal(predictor.model.state_dict()[key], value), key
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), (np.random.default_rng(0).random((150, 200, 3)) * 255).astype(np.uint8))
    records = demo.main(
        [
            "--config-file",
            config,
            "--input",
            str(image),
            "--confidence-threshold",
            "0.0",
            "--opts",
            "MODEL.WEIGHTS",
            path,
            *small,
        ]
    )
    assert len(records) == 1 and len(records[0]["scores"]) > 0
    out = export_model.main(
        [
            "--config-file",
            config,
            "--sample-image",
            str(image),
            "--output",
            str(tmp_path / "ts"),
            "MODEL.WEIGHTS",
            path,
            *small,
        ]
    )
    assert os.path.getsize(out) > 1_000_000  # the R50 weights are in it
