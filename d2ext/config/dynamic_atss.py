from detectron2.config import CfgNode as CN

from .atss import add_dense_head_keys


def add_dynamic_atss_config(cfg):
    """
    Adds MODEL.DYNAMIC_ATSS (METHODS.md §2.5; defaults from the released code, which is the
    ATSS R-50 1x recipe with the combined-IoU assignment).
    """
    cfg.MODEL.DYNAMIC_ATSS = CN()
    _C = cfg.MODEL.DYNAMIC_ATSS
    add_dense_head_keys(_C)
    _C.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Assignment score = CIOU_ANCHOR_WEIGHT * IoU(anchor, gt) + w_p(t) * IoU(predicted box, gt);
    # the released code uses 1 + 1.
    _C.CIOU_ANCHOR_WEIGHT = 1.0
    _C.CIOU_PRED_WEIGHT = 1.0
    # How w_p(t) moves with the iteration t. "constant" (w_p(t) = CIOU_PRED_WEIGHT) is the
    # method: the released loss, all ten released configs and the paper's figure use the plain
    # sum 1 + 1 (METHODS.md Errata 10). "up" (rising linearly from 0 to it) and "down" (falling
    # from it to 0), over CIOU_SCHEDULE_ITERS iterations (0 = SOLVER.MAX_ITER), then staying,
    # are d2ext ablations with no counterpart in the released code.
    _C.CIOU_SCHEDULE = "constant"
    _C.CIOU_SCHEDULE_ITERS = 0
    # Classification loss: "QFL" (released) or "VFL" (commented out in the released code).
    _C.CLS_LOSS = "QFL"
    _C.QFL_BETA = 2.0
    _C.VFL_ALPHA = 0.75
    _C.VFL_GAMMA = 2.0
    # Weight of the GIoU loss (each positive weighted by its predicted box's IoU).
    _C.REG_LOSS_WEIGHT = 2.0
    # Weight of the IoU branch's BCE (target: the predicted box's IoU with its GT).
    _C.IOU_LOSS_WEIGHT = 1.0
