# Lazy twin of atss_R_50_FPN_1x.yaml: ATSS R-50-FPN, COCO 1x (39.3 AP minival in the paper).
from detectron2.model_zoo import get_config

from ..common.models.atss import model
from ..common.optim import SGD as optimizer  # noqa: F401  (exported)
from ..common.schedules import lr_multiplier_1x as lr_multiplier  # noqa: F401  (exported)

dataloader = get_config("common/data/coco.py").dataloader
train = get_config("common/train.py").train

dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations[0].short_edge_length = (800,)
model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
train.output_dir = "./output/atss_R_50_FPN_1x"
