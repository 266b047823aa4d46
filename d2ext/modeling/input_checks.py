"""Checks of config values and ground truth, run when the model is built (config values) or
when a batch arrives (ground truth), so that a bad value fails naming its key, the value and the
allowed range instead of failing deep inside a layer (or training on nonsense silently).

Names: the yaml key, with the lazy-config argument where a lazy config builds the same object,
e.g. "MODEL.GFL.REG_MAX (model.head.reg_max)".
"""

import logging
import math
import numbers
from typing import List, Optional

import torch

from d2ext.errors import DataError

logger = logging.getLogger(__name__)


def check_pixel_std(pixel_std, key="MODEL.PIXEL_STD"):
    """A zero (or non-finite) entry turns every image into inf/NaN: the model would train on, or
    crash in an op (VFNet's deformable convolution), far from the cause."""
    values = [float(v) for v in pixel_std]
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(
            f"{key} must be finite values > 0 (images are divided by it), got {list(pixel_std)}"
        )


def _describe(low, high, low_open, high_open, integer) -> str:
    kind = "an integer" if integer else "a number"
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    return f"a finite {'integer' if integer else 'number'}"


def check_range(
    name: str,
    value,
    low=None,
    high=None,
    *,
    low_open=False,
    high_open=False,
    integer=False,
    why: str = "",
):
    """
    Raises ValueError "<name> must be <range>[ (<why>)], got <value>" unless value is a finite
    number (an integer if `integer`) within [low, high] (an end is excluded with low_open /
    high_open, absent when None). NaN fails every comparison, so it is refused too.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        reason = f" ({why})" if why else ""
        raise ValueError(
            f"{name} must be {_describe(low, high, low_open, high_open, integer)}{reason}, got {value!r}"
        )


def check_each(name: str, values, length: Optional[int] = None, **range_kwargs):
    """check_range on every element of a sequence (of `length` elements if given); the message
    names the whole value."""
    values = list(values)
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} values, got {values!r}")
    for v in values:
        try:
            check_range(name, v, **range_kwargs)
        except ValueError as e:
            raise ValueError(
                f"{str(e).rsplit(', got ', 1)[0]} for each of its values, got {values!r}"
            ) from None


def check_increasing(name: str, values, low=None, high=None, length: Optional[int] = None):
    """A non-decreasing sequence of numbers in [low, high] (IoU thresholds, ranges)."""
    values = list(values)
    check_each(name, values, length, low=low, high=high)
    if values != sorted(values):
        raise ValueError(f"{name} must be in increasing order, got {values!r}")


def check_dense_head_args(node: Optional[str], num_classes, num_convs, prior_prob):
    """The RetinaNetHead keys of every dense detector, before the head is built (NUM_CLASSES 0
    fails as a conv weight error, PRIOR_PROB 0 as a ZeroDivisionError). node: "MODEL.ATSS" etc.
    for a yaml config, None where a lazy config builds the head (model.head.*)."""

    def name(key, arg):
        return f"{node}.{key} (model.head.{arg})" if node else f"model.head.{arg}"

    check_range(name("NUM_CLASSES", "num_classes"), num_classes, 1, integer=True)
    check_range(name("NUM_CONVS", "conv_dims, its length"), num_convs, 0, integer=True)
    check_range(
        name("PRIOR_PROB", "prior_prob"),
        prior_prob,
        0,
        1,
        low_open=True,
        high_open=True,
        why="the classifier bias is -log((1 - p) / p)",
    )


def check_gt_classes(gt_instances: Optional[List], num_classes: int, key: str):
    """
    Refuses a training batch with a ground-truth class outside [0, num_classes): the losses
    would read a larger one as background (or another class) and train on silently, or index
    past the logits (MuSu after its warm start, Libra R-CNN's sampler) far from the cause.
    d2ext's data loaders check the dataset against the config when they are built; this covers
    batches a user's own loop gives the model. key: the config key of num_classes, e.g.
    "MODEL.ATSS.NUM_CLASSES (model.num_classes)", named in the error with the bad value.

    On the CPU a DataError (a ValueError). Elsewhere (CUDA) and inside torch.compile an asynchronous device
    assert instead, as a host check would sync every step; it cannot show the value.
    """
    classes = [
        inst.gt_classes
        for inst in gt_instances or ()
        if inst.has("gt_classes") and inst.gt_classes.numel()
    ]
    if not classes:
        return
    classes = torch.cat([c.flatten() for c in classes])
    fix = f"set it to the dataset's class count, or map the classes to 0..{num_classes - 1}"
    if classes.device.type != "cpu" or torch.compiler.is_compiling():
        torch._assert_async(
            ((classes >= 0) & (classes < num_classes)).all(),
            f"a ground-truth class is outside [0, {num_classes}): {key} is {num_classes}; {fix} (checked on "
            "the device, without the value: the same batch on the CPU names it)",
        )
        return
    low, high = classes.min().item(), classes.max().item()
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise DataError(
            f"ground-truth class {bad} is outside [0, {num_classes}): {key} is {num_classes}; {fix}"
        )


def drop_degenerate_gt_boxes(gt_instances: Optional[List], where: str):
    """
    Ground-truth boxes with zero or negative width or height (or NaN) give matchers an IoU of 0
    with every anchor / proposal, then log(0) box targets: inf/NaN losses. The ATSS family never
    assigns them (no anchor centre lies strictly inside); the IoU-matched methods (AP-loss
    RetinaNet, Libra's RPN and R-CNN) drop them here, warning once with the count.
    """
    if not gt_instances:
        return gt_instances
    keeps = []
    for inst in gt_instances:
        boxes = inst.gt_boxes.tensor
        keeps.append((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    num_bad = int(sum((~k).sum() for k in keeps))  # one sync per batch
    if num_bad == 0:
        return gt_instances
    global _warned_degenerate
    if not _warned_degenerate:
        _warned_degenerate = True
        logger.warning(
            f"{where}: ignoring {num_bad} ground-truth box(es) with zero or negative width or height "
            "(x2 <= x1 or y2 <= y1) in this batch; such boxes are ignored in every batch (warned once)"
        )
    return [inst[k] for inst, k in zip(gt_instances, keeps)]


_warned_degenerate = False
