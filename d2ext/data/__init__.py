from .mapper import BoxAwareDatasetMapper, build_train_mapper
from .synthetic import prepare_split, register_synthetic
from .photometric import HSVTransform, PhotometricDistortion, lighting_shift, photometric_transform
from .transforms import SSDMinIoURandomCrop, ZoomOut, build_ssd_augmentations, ssd_augmentations

register_synthetic()

__all__ = [
    "BoxAwareDatasetMapper",
    "HSVTransform",
    "PhotometricDistortion",
    "SSDMinIoURandomCrop",
    "ZoomOut",
    "build_ssd_augmentations",
    "build_train_mapper",
    "lighting_shift",
    "photometric_transform",
    "prepare_split",
    "register_synthetic",
    "ssd_augmentations",
]
