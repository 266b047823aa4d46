from detectron2.config import CfgNode as CN


def add_libra_config(cfg):
    """
    Adds MODEL.LIBRA (METHODS.md §7.6; defaults are Libra R-CNN's COCO recipe, Pang et al.,
    CVPR 2019). Each of the three pieces is switched separately:

    - sampling: MODEL.ROI_HEADS.NAME "LibraROIHeads" plus IOU_BALANCED_NEG / INSTANCE_BALANCED_POS
      (both False = Detectron2's random sampling, for ablations);
    - balanced L1: MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE "balanced_l1" (LibraROIHeads' predictor);
    - balanced feature pyramid: MODEL.BACKBONE.NAME "build_resnet_fpn_bfp_backbone".
    """
    cfg.MODEL.LIBRA = CN()
    _C = cfg.MODEL.LIBRA
    # IoU-balanced sampling of the R-CNN negatives (False: uniform, as Detectron2).
    _C.IOU_BALANCED_NEG = True
    # IoU bins the negatives are spread over (K); < 2 samples the IoU set uniformly.
    _C.NUM_IOU_BINS = 3
    # Negatives with max IoU under FLOOR_THRESH (the floor set) are sampled uniformly for
    # FLOOR_FRACTION of the quota and top up what the IoU bins leave; the bins cover the rest.
    # 0 (default): the floor set is the IoU-0 proposals, bins over IoU > 0, so with fraction 0 an
    # IoU-0 negative is drawn only when the IoU > 0 ones run short. This is what the published
    # results train with: mmdet's config says floor_thr=-1, but its IoUBalancedNegSampler sets
    # floor_thr to 0 on its first call and keeps it (METHODS.md Errata 1); the Libra repo's final
    # config says floor_thr=0. -1: the literal reading of -1 (no floor set, IoU-0 negatives binned
    # with the rest in [0, 1/3)), an ablation only. Any other negative value is an error.
    _C.FLOOR_THRESH = 0.0
    _C.FLOOR_FRACTION = 0.0
    # Positives spread evenly over the GT instances they match (False: uniform).
    _C.INSTANCE_BALANCED_POS = True
    # Balanced feature pyramid: index (into the FPN outputs, finest first) of the level the
    # others are gathered to (2 = P4 of P2-P6), and its refinement: "non_local" (embedded
    # Gaussian), "conv" (3x3 conv + ReLU, mmdet's ConvModule) or "none" (integrate and scatter only).
    _C.BFP_REFINE_LEVEL = 2
    _C.BFP_REFINE_TYPE = "non_local"
    # The FPN backbone builder (BACKBONE_REGISTRY name) BFP wraps. d2ext's builder is Detectron2's
    # build_resnet_fpn_backbone that also accepts narrow ResNet-18/34.
    _C.BFP_BASE_BACKBONE = "build_resnet_any_width_fpn_backbone"
    # Balanced L1 loss of the box branch (MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE "balanced_l1").
    _C.BALANCED_L1_ALPHA = 0.5
    _C.BALANCED_L1_GAMMA = 1.5
    _C.BALANCED_L1_BETA = 1.0
    # RPN: at most RPN_NEG_POS_UB negatives per sampled positive anchor (read by "LibraRPN"), and
    # the RPN losses divided by the anchors actually sampled (mmdet's avg_factor with a sampler),
    # not by BATCH_SIZE_PER_IMAGE x #images; -1 = no bound and Detectron2's normaliser (its RPN).
    _C.RPN_NEG_POS_UB = 5
    # LibraRPN (d2ext's RPN; the key is Detectron2's RPN node so any RPN subclass can read it):
    # in training, anchors whose grid location lies beyond the image's own size rounded up to
    # this are ignored (label -1), as mmdetection's valid_flags do for each image of a padded
    # batch; 0 = Detectron2's behaviour (every anchor of the padded batch is labelled).
    cfg.MODEL.RPN.VALID_ANCHORS_PAD_DIVISOR = 0
