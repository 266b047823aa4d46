from .mapper import BoxAwareDatasetMapper, build_train_mapper
from .synthetic import prepare_split, register_synthetic
from .transforms import ZoomOut, build_ssd_augmentations, ssd_augmentations

register_synthetic()

__all__ = [
    "BoxAwareDatasetMapper",
    "ZoomOut",
    "build_ssd_augmentations",
    "build_train_mapper",
    "prepare_split",
    "register_synthetic",
    "ssd_augmentations",
]
