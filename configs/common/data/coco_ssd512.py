# COCO with the released AP-loss code's 512x512 training pipeline (METHODS.md §6.5, Errata 8:
# photometric distortion with hue and PCA lighting, expand on a pixel-mean canvas, min-IoU crop
# by the largest IoU, flip, resize; d2ext.data.ssd_augmentations) and testing at short side 500
# (long side <= 833). The expand canvas is Detectron2's MSRA mean, the model's pixel_mean.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2ext.data import BoxAwareDatasetMapper, ssd_augmentations

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper._target_ = BoxAwareDatasetMapper
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations = ssd_augmentations(size=512)
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=500, max_size=833)
]
