from detectron2.config import get_cfg as _get_detectron2_cfg

from .ap_loss import add_ap_loss_config
from .atss import add_atss_config
from .backbone import add_backbone_config
from .data import add_data_config
from .defaults import add_d2ext_config
from .dynamic_atss import add_dynamic_atss_config
from .gfl import add_gfl_config
from .libra import add_libra_config
from .method_keys import (
    get_num_classes,
    num_classes_key,
    score_thresh_key,
    set_num_classes,
    set_score_thresh,
)
from .musu import add_musu_config
from .safe_yaml import ALLOW_UNSAFE_YAML_ENV, UnsafeYamlError, merge_from_file
from .vfnet import add_vfnet_config


def get_cfg():
    """Detectron2's default config plus every d2ext key. Load yaml files into it with
    d2ext.config.merge_from_file (safe yaml)."""
    cfg = _get_detectron2_cfg()
    add_d2ext_config(cfg)
    return cfg


__all__ = [
    "ALLOW_UNSAFE_YAML_ENV",
    "UnsafeYamlError",
    "add_ap_loss_config",
    "add_atss_config",
    "add_backbone_config",
    "add_d2ext_config",
    "add_data_config",
    "add_dynamic_atss_config",
    "add_gfl_config",
    "add_libra_config",
    "add_musu_config",
    "add_vfnet_config",
    "get_cfg",
    "get_num_classes",
    "merge_from_file",
    "num_classes_key",
    "score_thresh_key",
    "set_num_classes",
    "set_score_thresh",
]
