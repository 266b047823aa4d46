"""d2ext's configs, shipped inside the package: the counterpart of detectron2.model_zoo."""

import os
from typing import Optional

import torch
from detectron2.config import CfgNode, instantiate
from detectron2.modeling import build_model

from d2ext.checkpoint import load_weights
from d2ext.config import load_config

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

# Published checkpoints d2ext loads (MODEL_ZOO.md): config (without extension) -> URL. They are
# mmdetection's own files, converted on load by d2ext's Checkpointer; their COCO AP is the
# source's published number, not re-evaluated by d2ext.
_CHECKPOINTS = {
    "MMDet/atss_r50_fpn_1x_coco": "https://download.openmmlab.com/mmdetection/v2.0/atss/"
    "atss_r50_fpn_1x_coco/atss_r50_fpn_1x_coco_20200209-985f7bd0.pth",
    "MMDet/gfl_r50_fpn_1x_coco": "https://download.openmmlab.com/mmdetection/v2.0/gfl/"
    "gfl_r50_fpn_1x_coco/gfl_r50_fpn_1x_coco_20200629_121244-25944287.pth",
    "MMDet/vfnet_r50_fpn_1x_coco": "https://download.openmmlab.com/mmdetection/v2.0/vfnet/"
    "vfnet_r50_fpn_1x_coco/vfnet_r50_fpn_1x_coco_20201027-38db6f58.pth",
    "MMDet/libra-faster-rcnn_r50_fpn_1x_coco": "https://download.openmmlab.com/mmdetection/v2.0/"
    "libra_rcnn/libra_faster_rcnn_r50_fpn_1x_coco/libra_faster_rcnn_r50_fpn_1x_coco_20200130-3afee3a9.pth",
}
_MMDET = "https://download.openmmlab.com/mmdetection/v2.0/"
# The rest of mmdetection 3.3's zoo of these methods (the metafile.yml of configs/atss, gfl,
# vfnet, libra_rcnn): config -> file under _MMDET.
_CHECKPOINTS.update(
    {
        f"MMDet/{config}": _MMDET + path
        for config, path in {
            "atss_r101_fpn_1x_coco": "atss/atss_r101_fpn_1x_coco/atss_r101_fpn_1x_20200825-dfcadd6f.pth",
            "gfl_r50_fpn_ms-2x_coco": "gfl/gfl_r50_fpn_mstrain_2x_coco/"
            "gfl_r50_fpn_mstrain_2x_coco_20200629_213802-37bb1edc.pth",
            "gfl_r101_fpn_ms-2x_coco": "gfl/gfl_r101_fpn_mstrain_2x_coco/"
            "gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth",
            "gfl_r101-dconv-c3-c5_fpn_ms-2x_coco": "gfl/gfl_r101_fpn_dconv_c3-c5_mstrain_2x_coco/"
            "gfl_r101_fpn_dconv_c3-c5_mstrain_2x_coco_20200630_102002-134b07df.pth",
            "gfl_x101-32x4d_fpn_ms-2x_coco": "gfl/gfl_x101_32x4d_fpn_mstrain_2x_coco/"
            "gfl_x101_32x4d_fpn_mstrain_2x_coco_20200630_102002-50c1ffdb.pth",
            "gfl_x101-32x4d-dconv-c4-c5_fpn_ms-2x_coco": "gfl/gfl_x101_32x4d_fpn_dconv_c4-c5_mstrain_2x_coco/"
            "gfl_x101_32x4d_fpn_dconv_c4-c5_mstrain_2x_coco_20200630_102002-14a2bf25.pth",
            "vfnet_r50_fpn_ms-2x_coco": "vfnet/vfnet_r50_fpn_mstrain_2x_coco/"
            "vfnet_r50_fpn_mstrain_2x_coco_20201027-7cc75bd2.pth",
            "vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco": "vfnet/vfnet_r50_fpn_mdconv_c3-c5_mstrain_2x_coco/"
            "vfnet_r50_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-6879c318.pth",
            "vfnet_r101_fpn_1x_coco": "vfnet/vfnet_r101_fpn_1x_coco/vfnet_r101_fpn_1x_coco_20201027pth-c831ece7.pth",
            "vfnet_r101_fpn_ms-2x_coco": "vfnet/vfnet_r101_fpn_mstrain_2x_coco/"
            "vfnet_r101_fpn_mstrain_2x_coco_20201027pth-4a5d53f1.pth",
            "vfnet_r101-mdconv-c3-c5_fpn_ms-2x_coco": "vfnet/vfnet_r101_fpn_mdconv_c3-c5_mstrain_2x_coco/"
            "vfnet_r101_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-7729adb5.pth",
            "vfnet_x101-32x4d-mdconv-c3-c5_fpn_ms-2x_coco": "vfnet/vfnet_x101_32x4d_fpn_mdconv_c3-c5_mstrain_2x_coco/"
            "vfnet_x101_32x4d_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-d300a6fc.pth",
            "vfnet_x101-64x4d-mdconv-c3-c5_fpn_ms-2x_coco": "vfnet/vfnet_x101_64x4d_fpn_mdconv_c3-c5_mstrain_2x_coco/"
            "vfnet_x101_64x4d_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-b5f6da5e.pth",
            "libra-faster-rcnn_r101_fpn_1x_coco": "libra_rcnn/libra_faster_rcnn_r101_fpn_1x_coco/"
            "libra_faster_rcnn_r101_fpn_1x_coco_20200203-8dba6a5a.pth",
            "libra-faster-rcnn_x101-64x4d_fpn_1x_coco": "libra_rcnn/libra_faster_rcnn_x101_64x4d_fpn_1x_coco/"
            "libra_faster_rcnn_x101_64x4d_fpn_1x_coco_20200315-3a7d0488.pth",
            "libra-retinanet_r50_fpn_1x_coco": "libra_rcnn/libra_retinanet_r50_fpn_1x_coco/"
            "libra_retinanet_r50_fpn_1x_coco_20200205-804d94ce.pth",
        }.items()
    }
)


def get_checkpoint_url(config_path: str) -> str:
    """
    The URL of the published checkpoint of a d2ext config (MODEL_ZOO.md).

    Args:
        config_path (str): e.g. "MMDet/atss_r50_fpn_1x_coco.yaml" (or .py).
    """
    stem = os.path.splitext(config_path)[0]
    if stem not in _CHECKPOINTS:
        raise RuntimeError(
            f"d2ext has no published checkpoint for {config_path}; configs with one: "
            f"{sorted(_CHECKPOINTS)} (MODEL_ZOO.md). Train one with tools/train_net.py and set "
            f"MODEL.WEIGHTS (or train.init_checkpoint) to it"
        )
    return _CHECKPOINTS[stem]


def get_config_file(config_path: str) -> str:
    """
    Returns the real path of a config shipped with d2ext.

    Args:
        config_path (str): path relative to d2ext's "configs/", e.g. "ATSS/atss_R_50_FPN_1x.yaml".
    """
    cfg_file = os.path.join(CONFIG_ROOT, config_path)
    if not os.path.isfile(cfg_file):
        raise RuntimeError(
            f"{config_path} not available in d2ext's model zoo (looked in {CONFIG_ROOT})"
        )
    return cfg_file


def get_config(config_path: str, trained: bool = False):
    """
    Returns the config of a d2ext model: a CfgNode with every d2ext key for yaml configs, an
    omegaconf DictConfig for lazy (.py) configs.

    Args:
        trained (bool): set the weights (MODEL.WEIGHTS / train.init_checkpoint) to the
            config's published checkpoint (:func:`get_checkpoint_url`); raises if it has none.
    """
    url = get_checkpoint_url(config_path) if trained else None
    cfg = load_config(get_config_file(config_path))
    if url and isinstance(cfg, CfgNode):
        cfg.MODEL.WEIGHTS = url
    elif url:
        cfg.train.init_checkpoint = url
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None):
    """
    Builds the model of a d2ext config, with the weights its config names (MODEL.WEIGHTS or
    train.init_checkpoint), or with ``trained=True`` its published checkpoint (downloaded when
    online; offline, an error names the URL), in training mode.

    Example::

        from d2ext import model_zoo
        model = model_zoo.get("Synthetic/atss_R_18_FPN_tiny.yaml")
    """
    cfg = get_config(config_path, trained)
    if device is None and not torch.cuda.is_available():
        device = "cpu"
    if isinstance(cfg, CfgNode):
        if device is not None:
            cfg.MODEL.DEVICE = device
        model = build_model(cfg)
        return load_weights(model, cfg.MODEL.WEIGHTS, allow_random_init=True)
    model = instantiate(cfg.model)
    if device is not None:
        model = model.to(device)
    weights = cfg.train.init_checkpoint if "train" in cfg and "init_checkpoint" in cfg.train else ""
    return load_weights(model, weights, key="train.init_checkpoint", allow_random_init=True)
