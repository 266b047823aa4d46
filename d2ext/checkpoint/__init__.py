from .checkpointer import Checkpointer
from .conversion import ConversionError
from .loading import load_weights, local_weights
from .mmdet import convert_mmdet_checkpoint, is_mmdet_checkpoint, register_mmdet_head
from .safe_resume import InvalidCheckpointError, SafeResumeCheckpointer, UnsafeCheckpointPathError
from .torchvision import convert_torchvision_resnet, is_torchvision_resnet

__all__ = [
    "Checkpointer",
    "ConversionError",
    "InvalidCheckpointError",
    "SafeResumeCheckpointer",
    "UnsafeCheckpointPathError",
    "convert_mmdet_checkpoint",
    "convert_torchvision_resnet",
    "is_mmdet_checkpoint",
    "is_torchvision_resnet",
    "load_weights",
    "local_weights",
    "register_mmdet_head",
]
