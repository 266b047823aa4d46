from .checkpointer import Checkpointer
from .conversion import ConversionError
from .mmdet import convert_mmdet_checkpoint, is_mmdet_checkpoint
from .torchvision import convert_torchvision_resnet, is_torchvision_resnet

__all__ = [
    "Checkpointer",
    "ConversionError",
    "convert_mmdet_checkpoint",
    "convert_torchvision_resnet",
    "is_mmdet_checkpoint",
    "is_torchvision_resnet",
]
