from detectron2.config import CfgNode as CN

from .atss import add_dense_head_keys


def add_gfl_config(cfg):
    """Adds MODEL.GFL (METHODS.md §3.7; defaults are GFL v1's COCO recipe, DGQP=True is v2)."""
    cfg.MODEL.GFL = CN()
    _C = cfg.MODEL.GFL
    add_dense_head_keys(_C)
    # n: each box side is a distribution over n + 1 bins 0..n (in strides), its mean the distance.
    _C.REG_MAX = 16
    # DFL targets are clamped to [0, REG_MAX - DFL_TARGET_EPS] so the upper bin exists.
    _C.DFL_TARGET_EPS = 0.1
    _C.QFL_BETA = 2.0
    _C.LOSS_CLS_WEIGHT = 1.0
    _C.LOSS_DFL_WEIGHT = 0.25
    _C.LOSS_BOX_WEIGHT = 2.0
    # GFL v2: the distribution-guided quality predictor multiplies the class score.
    _C.DGQP = False
    # Statistics of each side's distribution fed to the DGQP: its top-k probabilities (+ mean).
    _C.DGQP_TOPK = 4
    _C.DGQP_ADD_MEAN = True
    _C.DGQP_CHANNELS = 64
