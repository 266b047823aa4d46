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
    # The GIoU and DFL losses are divided by W, the sum of the positives' weights (their best
    # class scores) over workers, clamped at LOC_WEIGHT_SUM_MIN (METHODS.md Errata 5): 0 is the
    # GFocal repos (v1 and v2; d2ext still keeps W >= 1e-6 so a batch without positives gives 0,
    # not 0/0), 1.0 is upstream mmdetection.
    _C.LOC_WEIGHT_SUM_MIN = 0.0
    # QFL's IoU target with the legacy "+1" widths in stride units, as the GFL v1 repo computes
    # it (Errata 5; it raises the target of small boxes). False: the plain IoU (GFL v2 repo,
    # mmdetection).
    _C.QUALITY_IOU_PLUS_ONE = False
    # GFL v2: the distribution-guided quality predictor multiplies the class score.
    _C.DGQP = False
    # Statistics of each side's distribution fed to the DGQP: its top-k probabilities (+ mean).
    _C.DGQP_TOPK = 4
    _C.DGQP_ADD_MEAN = True
    _C.DGQP_CHANNELS = 64
