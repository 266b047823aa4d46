# The bundled synthetic dataset (d2ext_shapes, see datasets/README.md) at CPU-friendly sizes.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

import d2ext.data  # noqa: F401  (registers d2ext_shapes_*)

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.dataset.names = "d2ext_shapes_train"
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(256, 288, 320), sample_style="choice", max_size=480),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 2
dataloader.test.dataset.names = "d2ext_shapes_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=288, max_size=480)
]
dataloader.test.num_workers = 2
