from .augmentation import RESIZE_BACKENDS, build_augmentation
from .cv2_resize import CV2ResizeShortestEdge, CV2ResizeTransform
from .mapper import BoxAwareDatasetMapper, build_test_mapper, build_train_mapper
from .photometric import HSVTransform, PhotometricDistortion, lighting_shift, photometric_transform
from .synthetic import prepare_split, register_synthetic
from .transforms import SSDMinIoURandomCrop, ZoomOut, build_ssd_augmentations, ssd_augmentations

register_synthetic()

__all__ = [
    "BoxAwareDatasetMapper",
    "CV2ResizeShortestEdge",
    "CV2ResizeTransform",
    "HSVTransform",
    "PhotometricDistortion",
    "RESIZE_BACKENDS",
    "SSDMinIoURandomCrop",
    "ZoomOut",
    "build_augmentation",
    "build_ssd_augmentations",
    "build_test_mapper",
    "build_train_mapper",
    "lighting_shift",
    "photometric_transform",
    "prepare_split",
    "register_synthetic",
    "ssd_augmentations",
]
