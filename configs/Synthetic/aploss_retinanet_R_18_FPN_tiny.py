# Lazy twin of aploss_retinanet_R_18_FPN_tiny.yaml: AP-loss RetinaNet on the bundled synthetic
# dataset with the tiny ATSS recipe.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from d2ext.modeling.backbone import build_basic_resnet

from ..common.data.synthetic import dataloader  # noqa: F401  (exported)
from ..common.models.aploss_retinanet import model
from ..common.schedules import step_schedule

model.backbone.bottom_up = L(build_basic_resnet)(
    depth=18, width=32, stem_width=32, norm="GN", out_features=["res3", "res4", "res5"]
)
model.backbone.out_channels = 64
model.backbone.norm = "GN"
model.backbone.top_block.in_channels = 256  # res5 of the half-width R18
model.head.input_shape = [ShapeSpec(channels=64)] * 5
model.head.conv_dims = [64, 64]
model.num_classes = 5
model.pixel_std = [57.375, 57.120, 58.395]

# The yaml's SGD: Detectron2's defaults (no bias LR factor), lr 0.02.
optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02
lr_multiplier = step_schedule(
    max_iter=500, milestones=[400, 470], warmup_iters=100, warmup_factor=0.01
)
lr_multiplier.warmup_method = "linear"

train = get_config("common/train.py").train
train.max_iter = 500
train.device = "cpu"
train.checkpointer.period = 500
train.eval_period = 0
train.output_dir = "./output/aploss_retinanet_R_18_FPN_tiny_lazy"
train.seed = 42
