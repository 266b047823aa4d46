# Lazy twin of libra_faster_rcnn_R_50_FPN_1x.yaml: Libra R-CNN R-50-FPN, COCO 1x (paper: 38.5 AP).
from detectron2.model_zoo import get_config

from d2ext.solver import clip_gradients

from ..common.models.libra_faster_rcnn import model
from ..common.schedules import step_schedule

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations[0].short_edge_length = (800,)
model.backbone.fpn.bottom_up.freeze_at = 2

# SOLVER.CLIP_GRADIENTS of the yaml (per-parameter norm <= 35).
optimizer = clip_gradients(get_config("common/optim.py").SGD, clip_value=35.0)
optimizer.lr = 0.02
lr_multiplier = step_schedule(90000, [60000, 80000], warmup_iters=500, warmup_factor=1.0 / 3)
lr_multiplier.warmup_method = "linear"

train = get_config("common/train.py").train
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
train.output_dir = "./output/libra_faster_rcnn_R_50_FPN_1x"
