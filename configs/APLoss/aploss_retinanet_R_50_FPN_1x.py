# Lazy twin of aploss_retinanet_R_50_FPN_1x.yaml: AP-loss RetinaNet R-50-FPN on Detectron2's usual
# 1x setting (800 input, 90k iterations at batch 16, lr 0.001). Not a reference recipe.
from detectron2.model_zoo import get_config

from ..common.models.aploss_retinanet import model
from ..common.schedules import step_schedule

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations[0].short_edge_length = (800,)

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.001
optimizer.momentum = 0.9
optimizer.weight_decay = 1e-4

lr_multiplier = step_schedule(max_iter=90000, milestones=[60000, 80000])
lr_multiplier.warmup_method = "linear"

train = get_config("common/train.py").train
model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
train.output_dir = "./output/aploss_retinanet_R_50_FPN_1x"
