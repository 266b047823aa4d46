# Lazy twin of atss_R_18_FPN_tiny.yaml: the demo model on the bundled synthetic dataset.
from detectron2.model_zoo import get_config

from ..common.data.synthetic import dataloader  # noqa: F401  (exported)
from ..common.models.atss import model
from ..common.optim import SGD as optimizer  # noqa: F401  (exported)
from ..common.schedules import step_schedule
from ..common.tiny import shrink_to_tiny

shrink_to_tiny(model)

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
train.output_dir = "./output/atss_R_18_FPN_tiny_lazy"
train.seed = 42
