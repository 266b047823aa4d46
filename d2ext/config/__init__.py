from detectron2.config import get_cfg as _get_detectron2_cfg

from d2ext.errors import UnsafeYamlError  # noqa: F401  (d2ext.config.UnsafeYamlError, as before)

from .ap_loss import add_ap_loss_config
from .atss import add_atss_config
from .backbone import add_backbone_config
from .data import add_data_config
from .defaults import add_d2ext_config, register_config
from .dynamic_atss import add_dynamic_atss_config
from .gfl import add_gfl_config
from .libra import add_libra_config
from .loader import is_lazy_config, load_config
from .method_keys import (
    get_num_classes,
    get_score_thresh,
    num_classes_key,
    score_thresh_key,
    set_num_classes,
    set_score_thresh,
)
from .musu import add_musu_config
from .safe_yaml import D2extCfgNode, merge_from_file
from .tta import add_tta_config, lazy_tta_defaults, lazy_tta_settings
from .vfnet import add_vfnet_config


def get_cfg() -> D2extCfgNode:
    """Detectron2's default config plus every d2ext key, as a :class:`D2extCfgNode`: its
    ``merge_from_file`` reads yaml safely (python tags refused unless ``allow_unsafe=True``) and
    with bounded work. Most code wants :func:`load_config` (yaml or lazy, with overrides)."""
    cfg = _get_detectron2_cfg()
    add_d2ext_config(cfg)
    return D2extCfgNode(cfg)


__all__ = [
    "D2extCfgNode",
    "add_ap_loss_config",
    "add_atss_config",
    "add_backbone_config",
    "add_d2ext_config",
    "add_data_config",
    "add_dynamic_atss_config",
    "add_gfl_config",
    "add_libra_config",
    "add_musu_config",
    "add_tta_config",
    "add_vfnet_config",
    "get_cfg",
    "get_num_classes",
    "get_score_thresh",
    "is_lazy_config",
    "lazy_tta_defaults",
    "lazy_tta_settings",
    "load_config",
    "merge_from_file",
    "num_classes_key",
    "register_config",
    "score_thresh_key",
    "set_num_classes",
    "set_score_thresh",
]
