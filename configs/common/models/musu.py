# MuSu (METHODS.md §5, a reconstruction) as a lazy graph: ATSS's backbone, anchors and box
# coding; a head without centerness; mutual candidate bags and rank weights.
from d2ext.modeling.meta_arch import MuSu, MuSuHead

from .atss import model

model._target_ = MuSu
model.head._target_ = MuSuHead
model.gate_thresh = 0.05
model.gate_shape = 0.5
model.mix_lambda = 0.2
model.rank_topk = 9
model.rank_weight = "linear"
model.rank_tau = 3.0
model.cls_loss = "QFL"
model.qfl_beta = 2.0
model.vfl_alpha = 0.75
model.vfl_gamma = 2.0
model.reg_loss_weight = 2.0
model.warmup_iters = 1000
# RetinaNet/ATSS-only arguments.
del model.focal_loss_alpha, model.focal_loss_gamma
