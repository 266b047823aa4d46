# Lazy twin of vfnet_R_50_FPN_1x_swa.yaml: VFNet R-50-FPN 1x (train.max_iter 90k), then 12 SWA
# epochs of ~7330 iterations at batch 16, each a cosine cycle from LR 0.01 down to 0.0001, the
# weights averaged at the end of each (train.swa: the keys of d2ext/config/swa.py, lower-case).
from .vfnet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.swa = dict(
    enabled=True,
    num_cycles=12,
    cycle_iters=7330,
    lr_factor=1.0,
    lr_schedule="cyclic",
    min_lr_ratio=0.01,
    reset_optimizer=True,
    eval_period=1,  # the average evaluated after every cycle, as the recipe's SWAHook
)
# Also evaluates the model at the end of the main schedule, the one SWA starts from.
train.eval_period = 90000
train.output_dir = "./output/vfnet_R_50_FPN_1x_swa"
