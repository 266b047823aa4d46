# mmdetection's schedule_1x with the SGD of its ATSS-family R-50 configs, in Detectron2 terms:
# lr 0.01 at batch 16, momentum 0.9, weight decay 1e-4 on every parameter (norms and biases
# too, no bias LR multiplier), linear warmup from 0.001 over 500 iterations, 12 epochs with
# x0.1 after epochs 8 and 11 (COCO train2017 without empty images: 117,266 images = 7,329
# iterations per epoch).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from d2ext.data import CV2ResizeShortestEdge

ITERS_PER_EPOCH = 7329
MAX_ITER_1X = 12 * ITERS_PER_EPOCH

SGD = get_config("common/optim.py").SGD
SGD.lr = 0.01
SGD.momentum = 0.9
SGD.weight_decay = 1e-4
SGD.params.weight_decay_norm = 1e-4

lr_multiplier_1x = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[8 * ITERS_PER_EPOCH, 11 * ITERS_PER_EPOCH],
        num_updates=MAX_ITER_1X,
    ),
    warmup_length=500 / MAX_ITER_1X,
    warmup_method="linear",
    warmup_factor=0.001,
)


def coco_1x(output_dir):
    """mmdetection's COCO data for these configs (RGB, keep-ratio resize to 1333x800 as mmcv
    does it, INPUT.RESIZE_BACKEND "cv2" of the yaml twins; flip 0.5 when training) and the 1x
    train settings (torchvision's ImageNet R-50, a checkpoint and an evaluation every epoch).
    Returns (dataloader, train)."""
    dataloader = get_config("common/data/coco.py").dataloader
    dataloader.train.mapper.use_instance_mask = False
    dataloader.train.mapper.image_format = "RGB"
    dataloader.train.mapper.augmentations[0] = L(CV2ResizeShortestEdge)(
        short_edge_length=(800,), max_size=1333, sample_style="choice"
    )
    dataloader.test.mapper.image_format = "RGB"
    dataloader.test.mapper.augmentations[0] = L(CV2ResizeShortestEdge)(
        short_edge_length=800, max_size=1333, sample_style="choice"
    )

    train = get_config("common/train.py").train
    train.init_checkpoint = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    train.max_iter = MAX_ITER_1X
    train.checkpointer.period = ITERS_PER_EPOCH
    train.eval_period = ITERS_PER_EPOCH
    train.output_dir = output_dir
    return dataloader, train


MAX_ITER_2X = 24 * ITERS_PER_EPOCH

# schedule_2x: 24 epochs, x0.1 after epochs 16 and 22 (same SGD and warmup).
lr_multiplier_2x = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[16 * ITERS_PER_EPOCH, 22 * ITERS_PER_EPOCH],
        num_updates=MAX_ITER_2X,
    ),
    warmup_length=500 / MAX_ITER_2X,
    warmup_method="linear",
    warmup_factor=0.001,
)


def coco_ms_2x(output_dir, short_edge_range=(480, 800), init_checkpoint=None):
    """coco_1x with mmdetection's multi-scale training (`ms-2x` configs: RandomResize
    scale=[(1333, short_min), (1333, short_max)], keep_ratio: the short side drawn uniformly
    from the integers of `short_edge_range`, the long side at most 1333, resized as mmcv does)
    and 24 epochs. Test: 1333x800 as 1x. Returns (dataloader, train)."""
    dataloader, train = coco_1x(output_dir)
    dataloader.train.mapper.augmentations[0] = L(CV2ResizeShortestEdge)(
        short_edge_length=tuple(short_edge_range), max_size=1333, sample_style="range"
    )
    train.max_iter = MAX_ITER_2X
    if init_checkpoint:
        train.init_checkpoint = init_checkpoint
    return dataloader, train
