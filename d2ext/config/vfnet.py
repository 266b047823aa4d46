from detectron2.config import CfgNode as CN

from .atss import add_dense_head_keys


def add_vfnet_config(cfg):
    """
    Adds MODEL.VFNET (METHODS.md §4.6; defaults are the paper's R-50 1x COCO recipe).
    """
    cfg.MODEL.VFNET = CN()
    _C = cfg.MODEL.VFNET
    add_dense_head_keys(_C)
    # VFNet's towers have 3 convs (the initial-box branch adds one more conv + norm + ReLU).
    _C.NUM_CONVS = 3
    # Varifocal loss: q * BCE(p, q) on positives (q = IoU of the refined box), alpha * p^gamma
    # * BCE(p, 0) on negatives; VFL_IOU_WEIGHTED=False drops the q factor on positives.
    _C.VFL_ALPHA = 0.75
    _C.VFL_GAMMA = 2.0
    _C.VFL_IOU_WEIGHTED = True
    # GIoU losses of the initial and refined boxes (each positive weighted by its box's IoU).
    _C.LOSS_BOX_INIT_WEIGHT = 1.5
    _C.LOSS_BOX_REFINE_WEIGHT = 2.0
    # Fraction of the star offsets' gradient that flows back into the initial box.
    _C.DCN_GRAD_MUL = 0.1
    # DCN_ON_LAST_CONV (add_dense_head_keys): True in every `mdconv` VFNet config.
    # Initial box = exp(Scale * x) * REG_DENOMS[level] pixels per side (FCOS regress-range
    # upper bounds with the last doubled).
    _C.REG_DENOMS = (64.0, 128.0, 256.0, 512.0, 1024.0)
    # Assignment: ATSS (the paper's), or with USE_ATSS=False FCOS's without centre sampling (the
    # official option): a point goes to the smallest GT that contains it and whose largest ltrb
    # distance from it lies in the point's level range, [-inf, b0], [b0, b1], ..., [b_last, inf]
    # for FCOS_SIZE_BOUNDS = (b0, ...), one entry less than the levels. The official FCOS mode
    # puts the points at stride / 2: MODEL.ANCHOR_GENERATOR.OFFSET: 0.5
    # (configs/VFNet/vfnet_fcos_assign_R_50_FPN_1x.yaml).
    _C.USE_ATSS = True
    _C.FCOS_SIZE_BOUNDS = (64.0, 128.0, 256.0, 512.0)
