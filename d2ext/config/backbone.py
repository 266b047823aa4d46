def add_backbone_config(cfg):
    """
    Backbone keys d2ext adds to Detectron2's MODEL.RESNETS / MODEL.FPN, read by d2ext's
    backbone builders (d2ext/modeling/backbone). Their defaults keep Detectron2's behaviour; the
    configs/MMDet/ configs set them as mmdetection builds its models.
    """
    # Pad input images to a multiple of this; 0 = Detectron2's default, the coarsest FPN
    # stride (128 with P7, 64 with P6). mmdetection pads to 32.
    cfg.MODEL.FPN.SIZE_DIVISIBILITY = 0
    # With MODEL.RESNETS.NORM "FrozenBN": train the scale and bias of the BNs of the stages not
    # frozen by MODEL.BACKBONE.FREEZE_AT, statistics fixed (mmdetection's norm_eval=True with a
    # trainable BN). Same function as FrozenBN at test time.
    cfg.MODEL.RESNETS.FROZEN_BN_TRAIN_AFFINE = False
