# DynamicATSS (METHODS.md §2) as a lazy graph: the ATSS graph with the combined-IoU assignment,
# QFL on the predicted IoU and an IoU branch in place of centerness.
from d2ext.modeling.meta_arch import DynamicATSS

from .atss import model

model._target_ = DynamicATSS
model.ciou_anchor_weight = 1.0
model.ciou_pred_weight = 1.0
model.ciou_schedule = "constant"
model.ciou_schedule_iters = 90000
model.cls_loss = "QFL"
model.qfl_beta = 2.0
model.vfl_alpha = 0.75
model.vfl_gamma = 2.0
model.reg_loss_weight = 2.0
model.iou_loss_weight = 1.0
