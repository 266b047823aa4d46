from .augmentation import RESIZE_BACKENDS, build_augmentation
from .cv2_resize import CV2ResizeShortestEdge, CV2ResizeTransform
from .mapper import BoxAwareDatasetMapper, build_test_mapper, build_train_mapper
from .photo_like import register_photo_like
from .photometric import HSVTransform, PhotometricDistortion, lighting_shift, photometric_transform
from .synthetic import prepare_split, register_synthetic
from .transforms import SSDMinIoURandomCrop, ZoomOut, build_ssd_augmentations, ssd_augmentations

register_synthetic()  # d2ext_shapes_*
register_photo_like()  # d2ext_photos_*

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
    "register_photo_like",
    "register_synthetic",
    "ssd_augmentations",
]
