# The tiny CPU model of the Synthetic/ configs: a half-width GroupNorm ResNet-18 (trained from
# scratch), a 64-channel FPN and 2-conv head towers, for the 5-class synthetic dataset.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from d2ext.modeling.backbone import build_basic_resnet

from .schedules import step_schedule


def shrink_to_tiny(model, num_classes=5):
    """Turns an ATSS-family lazy model (common/models/) into the tiny one, in place."""
    model.backbone.bottom_up = L(build_basic_resnet)(
        depth=18, width=32, stem_width=32, norm="GN", out_features=["res3", "res4", "res5"]
    )
    model.backbone.out_channels = 64
    model.backbone.norm = "GN"
    model.head.input_shape = [ShapeSpec(channels=64)] * 5
    model.head.conv_dims = [64, 64]
    model.num_classes = num_classes
    model.pixel_std = [57.375, 57.120, 58.395]
    return model


def tiny_schedule(output_dir):
    """The tiny configs' schedule: 500 iterations at lr 0.02 (x0.1 at 400 and 470) after a linear
    100-iteration warmup from 0.01, on the CPU, seed 42. Returns (lr_multiplier, train)."""
    lr_multiplier = step_schedule(
        max_iter=500, milestones=[400, 470], warmup_iters=100, warmup_factor=0.01
    )
    lr_multiplier.warmup_method = "linear"
    train = get_config("common/train.py").train
    train.max_iter = 500
    train.device = "cpu"
    train.checkpointer.period = 500
    train.eval_period = 0
    train.output_dir = output_dir
    train.seed = 42
    return lr_multiplier, train
