from detectron2.config import CfgNode as CN


def add_data_config(cfg):
    """
    Adds the training-pipeline and resize-backend switches read by d2ext's Trainer
    (d2ext.data.build_train_mapper / build_test_mapper) and
    the keys of the SSD-style pipeline of the AP-loss recipe (METHODS.md §6.5).
    """
    # "detectron2": Detectron2's DatasetMapper with ResizeShortestEdge (INPUT.MIN_SIZE_TRAIN ...)
    # and RandomFlip. "ssd": the AP-loss code's pipeline (METHODS.md Errata 8): photometric
    # distortion, expand, min-IoU random crop, flip, resize to a square INPUT.SSD.SIZE
    # (d2ext.data.ssd_augmentations); the model subtracts MODEL.PIXEL_MEAN.
    cfg.INPUT.TRAIN_PIPELINE = "detectron2"
    # Whose shortest-edge resize d2ext's train and test mappers run (d2ext.data.build_augmentation):
    # "pil": Detectron2's ResizeShortestEdge (PIL bilinear for uint8 images). "cv2": mmdetection's
    # keep-ratio Resize (mmcv.imrescale, cv2 backend): OpenCV bilinear, and mmcv's rounding of
    # the output size, which differs from Detectron2's for some image sizes
    # (d2ext.data.CV2ResizeShortestEdge). Same INPUT.MIN_SIZE_* / MAX_SIZE_* either way.
    cfg.INPUT.RESIZE_BACKEND = "pil"
    cfg.INPUT.SSD = CN()
    # Side of the square training input.
    cfg.INPUT.SSD.SIZE = 512
    # Photometric distortion on a float, never clipped image, each step with probability 1/2:
    # + U(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA); contrast x U(CONTRAST_RANGE) before or after
    # (1/2 each) the HSV steps: saturation x U(SATURATION_RANGE), hue + U(-HUE_DELTA, HUE_DELTA)
    # degrees; then PCA lighting noise, alpha ~ N(0, LIGHTING_STD^2) (ImageNet eigenvectors).
    cfg.INPUT.SSD.BRIGHTNESS_DELTA = 32.0
    cfg.INPUT.SSD.CONTRAST_RANGE = (0.5, 1.5)
    cfg.INPUT.SSD.SATURATION_RANGE = (0.5, 1.5)
    cfg.INPUT.SSD.HUE_DELTA = 18.0
    cfg.INPUT.SSD.LIGHTING_STD = 0.1
    # Expand: with probability ZOOM_OUT_PROB the image is placed at a random position on a
    # canvas ZOOM_OUT_RATIO[0]..[1] times larger, filled with MODEL.PIXEL_MEAN (0 once
    # normalised, as the reference).
    cfg.INPUT.SSD.ZOOM_OUT_PROB = 0.5
    cfg.INPUT.SSD.ZOOM_OUT_RATIO = (1.0, 4.0)
    # Min-IoU random crop: modes "no crop", each of MIN_IOUS, "any" (uniform); a patch (sides
    # MIN_CROP_SIZE..1 of the image) is accepted when the largest IoU of a box with it reaches
    # the threshold and a box centre is inside; boxes whose centre leaves it are dropped.
    # The reference has no 0.5 mode.
    cfg.INPUT.SSD.MIN_IOUS = (0.1, 0.3, 0.7, 0.9)
    cfg.INPUT.SSD.MIN_CROP_SIZE = 0.3
