from detectron2.config import CfgNode as CN


def add_dense_head_keys(node):
    """
    Keys every ATSS-family detector (ATSS, DynamicATSS, GFL) has under its own MODEL.<METHOD>
    node, with the papers' COCO defaults.
    """
    node.NUM_CLASSES = 80
    # FPN levels the head runs on (P3-P7, strides 8-128).
    node.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Convs (3x3 + norm + ReLU) in each of the classification and regression towers.
    node.NUM_CONVS = 4
    # Norm of the tower convs; the papers use GroupNorm(32) shared across levels.
    node.NORM = "GN"
    # Bias in the tower convs: True = Detectron2's RetinaNetHead; mmdetection's conv + GN
    # modules have none (a bias before GN changes nothing but the parameter count).
    node.TOWER_CONV_BIAS = True
    # The last conv of the classification and regression towers is a modulated deformable conv
    # (DCNv2 predicting its own offsets and mask from its input, then the norm and ReLU):
    # official ATSS's USE_DCN_IN_TOWER (its and DynamicATSS's dcnv2 configs), mmdetection's
    # dcn_on_last_conv (its `mdconv` VFNet configs).
    node.DCN_ON_LAST_CONV = False
    # Prior probability of a positive at initialisation (sets the classifier bias).
    node.PRIOR_PROB = 0.01
    # Candidates per FPN level and GT (k), taken by anchor-centre to GT-centre distance.
    node.TOPK = 9
    # Normaliser of the classification (and quality-branch) losses: "num_pos" = positives
    # summed over all workers / world size, recomputed every iteration (the papers); "ema" =
    # Detectron2's RetinaNet-style moving average of the per-worker count.
    node.LOSS_NORMALIZER = "num_pos"
    # Inference: candidates need sigmoid(cls) > SCORE_THRESH_TEST; the TOPK_CANDIDATES_TEST best
    # per level are decoded and clipped to the image; class-wise NMS; TEST.DETECTIONS_PER_IMAGE
    # kept.
    node.SCORE_THRESH_TEST = 0.05
    node.TOPK_CANDIDATES_TEST = 1000
    node.NMS_THRESH_TEST = 0.6
    # What that top-k ranks (METHODS.md Errata 6): "pair" = (location, class) pairs above the
    # threshold (Detectron2, official ATSS); "location" = locations by their best class score,
    # then every (location, class) of those above the threshold (official GFL v1/v2, VFNet).
    node.TOPK_CANDIDATES_TEST_BY = "pair"
    # Training: 0 = every anchor of the padded batch is assigned and trained on (Detectron2,
    # the official repos); N > 0 = anchors at grid locations beyond the image's own size rounded
    # up to a multiple of N (another image of the batch is larger) are ignored: no assignment,
    # no loss (mmdetection's valid_flags with its per-image pad_shape, N = 32).
    node.VALID_ANCHORS_PAD_DIVISOR = 0


def add_atss_config(cfg):
    """
    Adds MODEL.ATSS (METHODS.md §1; defaults are the paper's COCO recipe) and the FPN key that
    lets P6/P7 be built from P5, as all ATSS-family reference configs do.
    """
    cfg.MODEL.ATSS = CN()
    _C = cfg.MODEL.ATSS
    add_dense_head_keys(_C)
    # Box2BoxTransform weights (dx, dy, dw, dh).
    _C.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    _C.FOCAL_LOSS_ALPHA = 0.25
    _C.FOCAL_LOSS_GAMMA = 2.0
    # Weight of the centerness-weighted GIoU loss.
    _C.REG_LOSS_WEIGHT = 2.0
    # Classification loss: "FL" (focal loss, ATSS) or "VFL" (VFNet's varifocal loss, target =
    # IoU of the detached predicted box on the GT class: the VFNet paper's "ATSS + VFL" row).
    _C.CLS_LOSS = "FL"
    _C.VFL_ALPHA = 0.75
    _C.VFL_GAMMA = 2.0
    # Inference score (METHODS.md §1.4): "sqrt" = sqrt(cls * centerness), candidates ranked by
    # it (official ATSS); "product_ranked_by_cls" = the per-level top-k ranks sigmoid(cls)
    # alone and the kept candidates score cls * centerness (mmdetection 3.x's ATSSHead,
    # score_factors). Both threshold sigmoid(cls) at SCORE_THRESH_TEST.
    _C.TEST_SCORE = "sqrt"

    # The FPN feature P6 is built from: "p5" (ATSS, GFL, VFNet, DynamicATSS) or "res5"
    # (Detectron2's RetinaNet). Read by build_resnet_fpn_p6p7_backbone.
    cfg.MODEL.FPN.TOP_LEVELS_IN_FEATURE = "p5"
    # ReLU before the P6 and the P7 conv (METHODS.md Errata 3). The defaults are Detectron2's
    # and official ATSS's P7 = conv(relu(P6)); mmdetection's ATSS/GFL and the official GFL
    # repos have no ReLU (RELU_BEFORE_P7: False). Read by build_resnet_fpn_p6p7_backbone.
    cfg.MODEL.FPN.RELU_BEFORE_P6 = False
    cfg.MODEL.FPN.RELU_BEFORE_P7 = True
