from detectron2.config import CfgNode as CN


def add_ap_loss_config(cfg):
    """
    Adds MODEL.AP_LOSS (METHODS.md §6.6; defaults are the released AP-loss code's).

    APLossRetinaNet reads its architecture from MODEL.RETINANET (NUM_CLASSES, IN_FEATURES,
    NUM_CONVS, NORM, PRIOR_PROB, TOPK_CANDIDATES_TEST), like Detectron2's RetinaNet, and
    everything below from MODEL.AP_LOSS; the MODEL.RETINANET keys of the same meaning
    (IOU_THRESHOLDS, BBOX_REG_WEIGHTS, SMOOTH_L1_LOSS_BETA, SCORE_THRESH_TEST, NMS_THRESH_TEST,
    FOCAL_LOSS_*) are not read.
    """
    cfg.MODEL.AP_LOSS = CN()
    _C = cfg.MODEL.AP_LOSS
    # Width of the linear part of the step function H: scores further than DELTA apart are
    # ranked as a hard step (METHODS.md §6.3).
    _C.DELTA = 1.0
    # Interpolated AP (the released code): each positive's precision is raised to the best
    # precision of the positives ranked below it.
    _C.INTERPOLATED = True
    # Images ranked together (one ranking = all their (anchor, class) entries). 0: the whole
    # per-process minibatch, whatever its size. k >= 1: groups of k consecutive images of the
    # global batch, loss = mean over the groups; 1 = per-image ranking, SOLVER.IMS_PER_BATCH =
    # one global ranking. A group larger than a process' minibatch spans consecutive processes:
    # their scores and labels are all-gathered and each process back-propagates the group's
    # update of its own entries, so the ranking does not depend on the number of processes.
    # The released code ranks 8 images (2 GPUs x 8, METHODS.md Errata 7): the COCO configs set
    # 8. k must divide the images per process or be a multiple of them dividing the global
    # batch (ValueError otherwise).
    _C.RANKING_IMAGES = 0
    # Anchor labels: max IoU >= 0.5 positive, < 0.4 negative, in between ignored; with low-quality
    # matches every GT's best anchors (ties included) are positives whatever their IoU.
    _C.IOU_THRESHOLDS = [0.4, 0.5]
    _C.ALLOW_LOW_QUALITY_MATCHES = True
    # Box2BoxTransform weights: the reference divides the deltas by (0.1, 0.1, 0.2, 0.2).
    _C.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Smooth-L1 on the weighted deltas, averaged over the 4 * N_pos coordinates (§6.4).
    _C.SMOOTH_L1_BETA = 1.0
    # Inference: sigmoid(logit) > SCORE_THRESH_TEST, MODEL.RETINANET.TOPK_CANDIDATES_TEST per
    # level, class-wise NMS, TEST.DETECTIONS_PER_IMAGE kept.
    _C.SCORE_THRESH_TEST = 0.01
    _C.NMS_THRESH_TEST = 0.5
