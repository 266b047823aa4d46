# COCO with the SSD-style 512x512 training pipeline of the AP-loss recipe (METHODS.md §6.5) and
# testing at short side 500 (long side <= 833).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2ext.data import BoxAwareDatasetMapper, ssd_augmentations

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper._target_ = BoxAwareDatasetMapper
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations = ssd_augmentations(size=512)
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=500, max_size=833)]
