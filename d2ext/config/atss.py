from detectron2.config import CfgNode as CN


def add_atss_config(cfg):
    """
    Adds MODEL.ATSS (METHODS.md §1; defaults are the paper's COCO recipe) and the FPN key that
    lets P6/P7 be built from P5, as all ATSS-family reference configs do.
    """
    cfg.MODEL.ATSS = CN()
    _C = cfg.MODEL.ATSS
    _C.NUM_CLASSES = 80
    # FPN levels the head runs on (P3-P7, strides 8-128).
    _C.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Convs (3x3 + norm + ReLU) in each of the classification and regression towers.
    _C.NUM_CONVS = 4
    # Norm of the tower convs; ATSS uses GroupNorm(32) shared across levels.
    _C.NORM = "GN"
    # Prior probability of a positive at initialisation (sets the classifier bias).
    _C.PRIOR_PROB = 0.01
    # Candidates per FPN level and GT (k), taken by anchor-centre to GT-centre distance.
    _C.TOPK = 9
    # Box2BoxTransform weights (dx, dy, dw, dh).
    _C.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    _C.FOCAL_LOSS_ALPHA = 0.25
    _C.FOCAL_LOSS_GAMMA = 2.0
    # Weight of the centerness-weighted GIoU loss.
    _C.REG_LOSS_WEIGHT = 2.0
    # Normaliser of the classification and centerness losses: "num_pos" = positives summed over
    # all workers / world size, recomputed every iteration (the paper); "ema" = Detectron2's
    # RetinaNet-style moving average of the per-worker count.
    _C.LOSS_NORMALIZER = "num_pos"
    # Inference: candidates need sigmoid(cls) > SCORE_THRESH_TEST; the TOPK_CANDIDATES_TEST best
    # per level (by cls * centerness) are decoded; final score sqrt(cls * centerness); class-wise
    # NMS; TEST.DETECTIONS_PER_IMAGE kept.
    _C.SCORE_THRESH_TEST = 0.05
    _C.TOPK_CANDIDATES_TEST = 1000
    _C.NMS_THRESH_TEST = 0.6

    # The FPN feature P6 is built from: "p5" (ATSS, GFL, VFNet, DynamicATSS) or "res5"
    # (Detectron2's RetinaNet). Read by build_resnet_fpn_p6p7_backbone.
    cfg.MODEL.FPN.TOP_LEVELS_IN_FEATURE = "p5"
