"""d2ext's configs, shipped inside the package: the counterpart of detectron2.model_zoo."""
import os
from typing import Optional

import torch

from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.modeling import build_model

from d2ext.checkpoint import Checkpointer

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def get_config_file(config_path: str) -> str:
    """
    Returns the real path of a config shipped with d2ext.

    Args:
        config_path (str): path relative to d2ext's "configs/", e.g. "ATSS/atss_R_50_FPN_1x.yaml".
    """
    cfg_file = os.path.join(CONFIG_ROOT, config_path)
    if not os.path.isfile(cfg_file):
        raise RuntimeError(f"{config_path} not available in d2ext's model zoo (looked in {CONFIG_ROOT})")
    return cfg_file


def get_config(config_path: str, trained: bool = False):
    """
    Returns the config of a d2ext model: a CfgNode with every d2ext key for yaml configs, an
    omegaconf DictConfig for lazy (.py) configs.

    Args:
        trained (bool): d2ext publishes no trained checkpoints yet, so True raises.
    """
    if trained:
        raise NotImplementedError(
            f"d2ext has no trained checkpoint for {config_path}: train one with "
            f"tools/train_net.py, then set MODEL.WEIGHTS (or train.init_checkpoint) to it"
        )
    cfg_file = get_config_file(config_path)
    if cfg_file.endswith(".yaml"):
        from d2ext.config import get_cfg

        cfg = get_cfg()
        cfg.merge_from_file(cfg_file)
        return cfg
    if cfg_file.endswith(".py"):
        return LazyConfig.load(cfg_file)
    raise ValueError(f"{config_path} is neither a .yaml nor a .py config")


def get(config_path: str, trained: bool = False, device: Optional[str] = None):
    """
    Builds the model of a d2ext config, with the weights its config names (MODEL.WEIGHTS or
    train.init_checkpoint), in training mode.

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
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)
        return model
    model = instantiate(cfg.model)
    if device is not None:
        model = model.to(device)
    if "train" in cfg and "init_checkpoint" in cfg.train:
        Checkpointer(model).load(cfg.train.init_checkpoint)
    return model
