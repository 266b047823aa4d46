from detectron2.config import get_cfg as _get_detectron2_cfg

from .ap_loss import add_ap_loss_config
from .atss import add_atss_config
from .backbone import add_backbone_config
from .data import add_data_config
from .defaults import add_d2ext_config
from .dynamic_atss import add_dynamic_atss_config
from .gfl import add_gfl_config
from .libra import add_libra_config
from .musu import add_musu_config
from .vfnet import add_vfnet_config


def get_cfg():
    """Detectron2's default config plus every d2ext key."""
    cfg = _get_detectron2_cfg()
    add_d2ext_config(cfg)
    return cfg


__all__ = [
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
]
