from .ap_loss import add_ap_loss_config
from .atss import add_atss_config
from .backbone import add_backbone_config
from .data import add_data_config
from .dynamic_atss import add_dynamic_atss_config
from .gfl import add_gfl_config
from .libra import add_libra_config
from .musu import add_musu_config
from .vfnet import add_vfnet_config


def add_d2ext_config(cfg):
    """Adds every d2ext key (each method's under MODEL.<METHOD>) to a Detectron2 config."""
    add_backbone_config(cfg)
    add_atss_config(cfg)
    add_dynamic_atss_config(cfg)
    add_gfl_config(cfg)
    add_libra_config(cfg)
    add_ap_loss_config(cfg)
    add_data_config(cfg)
    add_vfnet_config(cfg)
    add_musu_config(cfg)
