from .ap_loss import add_ap_loss_config
from .atss import add_atss_config
from .backbone import add_backbone_config
from .data import add_data_config
from .dynamic_atss import add_dynamic_atss_config
from .gfl import add_gfl_config
from .libra import add_libra_config
from .musu import add_musu_config
from .swa import add_swa_config
from .tta import add_tta_config
from .vfnet import add_vfnet_config

# Each adds one method's (or component's) keys to a config; a method outside this package adds
# its own with register_config.
CONFIG_ADDERS = [
    add_backbone_config,
    add_atss_config,
    add_dynamic_atss_config,
    add_gfl_config,
    add_libra_config,
    add_ap_loss_config,
    add_data_config,
    add_vfnet_config,
    add_musu_config,
    add_tta_config,
    add_swa_config,
]


def register_config(add_config):
    """Registers ``add_config(cfg)``, a new method's ``add_<method>_config``: d2ext's get_cfg()
    (hence every tool) then has its keys. Returns it, so it can decorate the function."""
    if add_config not in CONFIG_ADDERS:
        CONFIG_ADDERS.append(add_config)
    return add_config


def add_d2ext_config(cfg):
    """Adds every d2ext key (each method's under MODEL.<METHOD>) to a Detectron2 config."""
    for add_config in CONFIG_ADDERS:
        add_config(cfg)
