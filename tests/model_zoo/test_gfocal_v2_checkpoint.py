"""
configs/MMDet/gfocal_r50_fpn_1x loads implus/GFocalV2's gfocal_r50_fpn_1x checkpoint layout.

There is no mmdetection 3.3 class for GFocalV2's head, so no oracle model runs here. The test
writes, with random values, the state dict of the official module structure (mmdetection 2's
ResNet-50 and FPN(start_level=1, add_extra_convs='on_output', num_outs=5); GFocalHead: conv+GN
towers ``cls_convs`` / ``reg_convs``, ``gfl_cls``, ``gfl_reg``, per-level ``scales``,
``reg_conf`` = Sequential(conv 1x1 20 -> 64, ReLU, conv 1x1 64 -> 1, Sigmoid), the ``integral``
bins buffer), loads it through MODEL.WEIGHTS, and checks that every source key lands in the
model and that the head computes the official formula, written out below from the loaded
source tensors:

    prob = softmax(scale_l * gfl_reg(reg_tower(x)), over the 17 bins of each side)
    stat = [top-4 probabilities of each side (sorted), their mean]            (N, 20, H, W)
    quality = sigmoid(reg_conf.2(relu(reg_conf.0(stat))))
    score = sigmoid(gfl_cls(cls_tower(x))) * quality

and that the detector's inference reports those scores. The backbone and FPN names are those
of the mmdetection rows of MODEL_ZOO.md, whose parity tests run mmdetection itself.
"""

import logging
import os

import pytest
import torch
from conftest import CONFIGS
from torch.nn import functional as F

CONFIG = os.path.join(CONFIGS, "MMDet", "gfocal_r50_fpn_1x.yaml")
NUM_CLASSES, REG_MAX, TOPK, CHANNELS = 80, 16, 4, 256
DROPPED = ("num_batches_tracked", "integral.project")  # d2ext keeps no copy of these


def official_gfocal_r50_state(seed=0):
    """{name: tensor} of GFocalV2's GFL(ResNet-50, FPN, GFocalHead) for COCO, random values."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def rand(name, *shape, std=0.1, mean=0.0):
        state[name] = mean + std * torch.randn(shape, generator=g)

    def bn(prefix, c):
        rand(prefix + ".weight", c, mean=1.0)
        rand(prefix + ".bias", c)
        rand(prefix + ".running_mean", c)
        state[prefix + ".running_var"] = 0.5 + torch.rand(c, generator=g)
        state[prefix + ".num_batches_tracked"] = torch.tensor(1000)

    def conv(name, cout, cin, k, bias=True):
        rand(name + ".weight", cout, cin, k, k, std=(cin * k * k) ** -0.5)
        if bias:
            rand(name + ".bias", cout)

    # mmdetection's ResNet(depth=50, style='pytorch'): torchvision's layout.
    conv("backbone.conv1", 64, 3, 7, bias=False)
    bn("backbone.bn1", 64)
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"backbone.layer{stage}.{b}."
            cin = inplanes if b == 0 else 4 * planes
            conv(p + "conv1", planes, cin, 1, bias=False)
            bn(p + "bn1", planes)
            conv(p + "conv2", planes, planes, 3, bias=False)
            bn(p + "bn2", planes)
            conv(p + "conv3", 4 * planes, planes, 1, bias=False)
            bn(p + "bn3", 4 * planes)
            if b == 0:
                conv(p + "downsample.0", 4 * planes, cin, 1, bias=False)
                bn(p + "downsample.1", 4 * planes)
        inplanes = 4 * planes
    # FPN(in_channels=[256, 512, 1024, 2048], start_level=1, add_extra_convs='on_output', num_outs=5)
    for i, cin in enumerate((512, 1024, 2048)):
        conv(f"neck.lateral_convs.{i}.conv", CHANNELS, cin, 1)
    for i in range(5):
        conv(f"neck.fpn_convs.{i}.conv", CHANNELS, CHANNELS, 3)
    # GFocalHead(num_classes=80, stacked_convs=4, reg_max=16, reg_topk=4, reg_channels=64, add_mean=True)
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            conv(
                f"bbox_head.{tower}.{i}.conv", CHANNELS, CHANNELS, 3, bias=False
            )  # ConvModule + GN
            rand(f"bbox_head.{tower}.{i}.gn.weight", CHANNELS, mean=1.0, std=0.3)
            rand(f"bbox_head.{tower}.{i}.gn.bias", CHANNELS)
    conv("bbox_head.gfl_cls", NUM_CLASSES, CHANNELS, 3)
    state["bbox_head.gfl_cls.bias"] -= 2.0
    conv("bbox_head.gfl_reg", 4 * (REG_MAX + 1), CHANNELS, 3)
    state["bbox_head.gfl_reg.weight"] *= 4  # peaked distributions: the top-4 statistics vary
    for level in range(5):
        state[f"bbox_head.scales.{level}.scale"] = torch.tensor(
            0.7 + 0.1 * level
        )  # mmcv Scale: 0-d
    conv("bbox_head.reg_conf.0", 64, 4 * (TOPK + 1), 1)
    conv("bbox_head.reg_conf.2", 1, 64, 1)
    state["bbox_head.integral.project"] = torch.linspace(0, REG_MAX, REG_MAX + 1)
    return state


def official_head(state, features):
    """GFocalHead.forward_single of every level, from the source tensors: (cls_score, bbox_pred)."""
    h = {k[len("bbox_head.") :]: v for k, v in state.items() if k.startswith("bbox_head.")}

    def tower(x, name):
        for i in range(4):
            x = F.conv2d(x, h[f"{name}.{i}.conv.weight"], padding=1)
            x = F.relu(F.group_norm(x, 32, h[f"{name}.{i}.gn.weight"], h[f"{name}.{i}.gn.bias"]))
        return x

    scores, preds = [], []
    for level, x in enumerate(features):
        cls_feat, reg_feat = tower(x, "cls_convs"), tower(x, "reg_convs")
        bbox_pred = F.conv2d(reg_feat, h["gfl_reg.weight"], h["gfl_reg.bias"], padding=1)
        bbox_pred = (bbox_pred * h[f"scales.{level}.scale"]).float()
        n, _, height, width = bbox_pred.shape
        prob = F.softmax(bbox_pred.reshape(n, 4, REG_MAX + 1, height, width), dim=2)
        top = prob.topk(TOPK, dim=2).values
        stat = torch.cat([top, top.mean(dim=2, keepdim=True)], dim=2).reshape(n, -1, height, width)
        hidden = F.relu(F.conv2d(stat, h["reg_conf.0.weight"], h["reg_conf.0.bias"]))
        quality = torch.sigmoid(F.conv2d(hidden, h["reg_conf.2.weight"], h["reg_conf.2.bias"]))
        cls_logits = F.conv2d(cls_feat, h["gfl_cls.weight"], h["gfl_cls.bias"], padding=1)
        scores.append(cls_logits.sigmoid() * quality)
        preds.append(bbox_pred)
    return scores, preds


@pytest.fixture(autouse=True)
def d2ext_logs_reach_caplog(monkeypatch):
    """Detectron2's setup_logger (run by earlier tests in the same process) stops the "d2ext"
    logger's propagation; caplog listens at the root."""
    for name in ("d2ext", "d2ext.checkpoint"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = official_gfocal_r50_state()
    path = str(tmp_path_factory.mktemp("gfocal") / "gfocal_r50_fpn_1x.pth")
    torch.save({"state_dict": state, "meta": {"mmdet_version": "2.6.0"}}, path)
    return state, path


def load_model(path, config=CONFIG):
    from detectron2.modeling import build_model

    from d2ext.checkpoint import Checkpointer
    from d2ext.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", path])
    torch.manual_seed(0)
    model = build_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    return cfg, model.eval()


def test_every_source_key_is_loaded(checkpoint, caplog):
    from d2ext.checkpoint.mmdet import convert_mmdet_checkpoint

    state, path = checkpoint
    with caplog.at_level(logging.INFO, logger="d2ext.checkpoint"):
        cfg, model = load_model(path)
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("d2ext")
    ]
    converted = convert_mmdet_checkpoint({"state_dict": state}, model.state_dict())
    kept = [k for k in state if not k.endswith(DROPPED)]
    # Five per-level scales become one (5,) parameter; every other kept key is one model key.
    assert len(converted) == len(kept) - 4
    model_state = model.state_dict()
    for key, value in converted.items():
        torch.testing.assert_close(model_state[key], value, rtol=0, atol=0, msg=key)
    # Every parameter and statistic of the model came from the checkpoint.
    assert sorted(k for k in model_state if k.startswith(("backbone.", "head."))) == sorted(
        converted
    )
    torch.testing.assert_close(
        model.head.dgqp.conv1.weight, state["bbox_head.reg_conf.0.weight"], rtol=0, atol=0
    )
    torch.testing.assert_close(
        model.head.dgqp.conv2.bias, state["bbox_head.reg_conf.2.bias"], rtol=0, atol=0
    )
    assert (cfg.MODEL.GFL.DGQP, cfg.MODEL.GFL.DGQP_TOPK, cfg.MODEL.GFL.DGQP_CHANNELS) == (
        True,
        4,
        64,
    )


def test_missing_and_unknown_keys_are_named(checkpoint, tmp_path, caplog):
    from d2ext.checkpoint.conversion import ConversionError

    state, _ = checkpoint
    missing = {k: v for k, v in state.items() if k != "bbox_head.reg_conf.2.weight"}
    path = str(tmp_path / "missing.pth")
    torch.save({"state_dict": missing, "meta": {}}, path)
    with pytest.raises(ConversionError, match=r"head\.dgqp\.conv2\.weight"):
        load_model(path)
    unknown = dict(state, **{"bbox_head.reg_conf.4.weight": torch.zeros(1)})
    path = str(tmp_path / "unknown.pth")
    torch.save({"state_dict": unknown, "meta": {}}, path)
    with caplog.at_level(logging.WARNING, logger="d2ext.checkpoint"):
        load_model(path)
    assert any("bbox_head.reg_conf.4.weight" in r.getMessage() for r in caplog.records)


def test_gfl_v1_config_refuses_the_v2_checkpoint(checkpoint):
    """Without DGQP the reg_conf weights would have nowhere to go and the scores would lack the
    quality factor: an error naming the key the model lacks, not a silently different model."""
    from d2ext.checkpoint.conversion import ConversionError

    _, path = checkpoint
    with pytest.raises(ConversionError, match=r"GFL v2 model .*'head\.dgqp\.conv1\.weight'"):
        load_model(path, os.path.join(CONFIGS, "MMDet", "gfl_r50_fpn_1x_coco.yaml"))


def test_dgqp_head_is_the_official_formula(checkpoint):
    state, path = checkpoint
    _, model = load_model(path)
    g = torch.Generator().manual_seed(3)
    # P3-P7 of a 2-image batch (sizes of a 160 x 224 input padded to 32).
    features = [
        torch.randn(2, CHANNELS, h, w, generator=g)
        for h, w in ((20, 28), (10, 14), (5, 7), (3, 4), (2, 2))
    ]
    with torch.no_grad():
        logits, distributions, quality = model.head(features)
        expected_scores, expected_preds = official_head(state, features)
    for level in range(5):
        score = logits[level].sigmoid() * quality[level].sigmoid()
        torch.testing.assert_close(
            distributions[level], expected_preds[level], rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(score, expected_scores[level], rtol=1e-5, atol=1e-6)
    # The check sees the layout of the 20 statistics: the same reg_conf.0 weights on permuted
    # input channels give scores further off than the tolerance above.
    permuted = dict(state)
    permuted["bbox_head.reg_conf.0.weight"] = state["bbox_head.reg_conf.0.weight"][
        :, torch.randperm(20, generator=g)
    ]
    other_scores, _ = official_head(permuted, features)
    assert max((a - b).abs().max().item() for a, b in zip(other_scores, expected_scores)) > 1e-3

    # Inference ranks and reports that score: every detection of the first image (which fills
    # the batch) is an official score of its class, above score_thr, the best one included.
    from detectron2.structures import ImageList

    images = ImageList(torch.zeros(2, 3, 160, 224), [(160, 224), (150, 200)])
    with torch.no_grad():
        detections = model.forward_inference(images, features, model.head(features))[0]
    official = torch.cat(
        [s[0].permute(1, 2, 0).reshape(-1, NUM_CLASSES) for s in expected_scores]
    )  # (R, K)
    assert 0 < len(detections) <= 100 and (detections.scores > 0.05).all()
    for score, cls in zip(detections.scores, detections.pred_classes):
        assert (official[:, cls] - score).abs().min() <= 1e-6 * score
    assert abs(detections.scores.max().item() - official.max().item()) <= 1e-6
