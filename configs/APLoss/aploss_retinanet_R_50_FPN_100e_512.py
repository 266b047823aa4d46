# Lazy twin of aploss_retinanet_R_50_FPN_100e_512.yaml: AP-loss RetinaNet R-50-FPN, 512 SSD-style
# input, 100 COCO epochs at lr 0.001, test at 500 (35.5 AP minival with aLRPLoss's port).
from detectron2.model_zoo import get_config

from ..common.data.coco_ssd512 import dataloader  # noqa: F401  (exported)
from ..common.models.aploss_retinanet import model
from ..common.schedules import step_schedule

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.001
optimizer.momentum = 0.9
optimizer.weight_decay = 1e-4

# 7,330 iterations per epoch at batch 16; x0.1 at epochs 60 and 80; linear warmup from 1/3.
lr_multiplier = step_schedule(max_iter=733000, milestones=[439800, 586400])
lr_multiplier.warmup_method = "linear"

train = get_config("common/train.py").train
model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 733000
train.checkpointer.period = 36650
train.output_dir = "./output/aploss_retinanet_R_50_FPN_100e_512"
