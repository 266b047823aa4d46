from detectron2.config import CfgNode as CN


def add_data_config(cfg):
    """
    Adds the training-pipeline switch read by d2ext's Trainer (d2ext.data.build_train_mapper) and
    the keys of the SSD-style pipeline of the AP-loss recipe (METHODS.md §6.5).
    """
    # "detectron2": Detectron2's DatasetMapper with ResizeShortestEdge (INPUT.MIN_SIZE_TRAIN ...)
    # and RandomFlip. "ssd": photometric distortion, zoom-out, min-IoU random crop, resize to a
    # square INPUT.SSD.SIZE, flip (d2ext.data.ssd_augmentations).
    cfg.INPUT.TRAIN_PIPELINE = "detectron2"
    cfg.INPUT.SSD = CN()
    # Side of the square training input.
    cfg.INPUT.SSD.SIZE = 512
    # Zoom-out: with probability ZOOM_OUT_PROB the image is placed at a random position on a
    # canvas ZOOM_OUT_RATIO[0]..[1] times larger, filled with PIXEL_FILL (the reference fills
    # with the pixel mean).
    cfg.INPUT.SSD.ZOOM_OUT_PROB = 0.5
    cfg.INPUT.SSD.ZOOM_OUT_RATIO = (1.0, 4.0)
    cfg.INPUT.SSD.PIXEL_FILL = 114.0
    # Min-IoU random crop: a crop keeps every box with IoU >= one of MIN_IOUS (drawn at random,
    # or no crop), sides >= MIN_CROP_SIZE of the image; boxes whose centre leaves the crop are
    # dropped.
    cfg.INPUT.SSD.MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)
    cfg.INPUT.SSD.MIN_CROP_SIZE = 0.3
