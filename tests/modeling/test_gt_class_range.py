"""A training batch given straight to a model (a user's own loop, not d2ext's data loaders, which
check the dataset against the config) with a ground-truth class >= the model's NUM_CLASSES, or
< 0, is refused naming the config key and the value: it used to train silently (read as
background) or fail with an IndexError deep in MuSu (after its warm start) or Libra R-CNN."""

import os
import re

import conftest
import pytest
import torch
from conftest import CONFIGS
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from d2ext.config import get_num_classes, num_classes_key
from d2ext.modeling.input_checks import check_gt_classes

TINY = os.path.join(CONFIGS, "Synthetic", "{}_R_18_FPN_tiny.yaml")
SIZE = (64, 64)
BOXES = [[[4, 4, 40, 36], [20, 10, 60, 60]], [[8, 8, 30, 50]]]
# One model per meta-architecture / ROI heads class of d2ext (ATSS covers the ATSSBase check
# that every ATSS-family forward_training calls; each subclass calls it itself).
METHODS = ["atss", "dynamic_atss", "gfl", "vfnet", "musu", "aploss_retinanet", "libra_faster_rcnn"]


def _train_step(model, classes_per_image):
    inputs = conftest.make_inputs(BOXES, SIZE)
    for x, classes in zip(inputs, classes_per_image):
        x["instances"].gt_classes = torch.tensor(classes, dtype=torch.int64)
    with EventStorage():
        return model(inputs)


@pytest.fixture(scope="module", params=METHODS)
def model_and_key(request):
    cfg = conftest.tiny_cfg(TINY.format(request.param))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    return model, num_classes_key(cfg), get_num_classes(cfg)


@pytest.mark.parametrize("bad", ["num_classes", "far", "negative"])
def test_model_refuses_gt_class_outside_num_classes(model_and_key, bad):
    model, key, num_classes = model_and_key
    value = {"num_classes": num_classes, "far": num_classes + 7, "negative": -1}[bad]
    with pytest.raises(
        ValueError,
        match=rf"ground-truth class {value} is outside \[0, {num_classes}\): {re.escape(key)} ",
    ):
        _train_step(model, [[0, value], [1]])


def test_model_trains_on_valid_classes(model_and_key):
    model, _, num_classes = model_and_key
    losses = _train_step(model, [[0, num_classes - 1], [1]])
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses


def test_check_accepts_empty_images_and_names_the_key():
    from detectron2.structures import Boxes, Instances

    empty = Instances(
        SIZE, gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)
    )
    check_gt_classes([empty, empty], 3, "MODEL.X.NUM_CLASSES")
    check_gt_classes([], 3, "MODEL.X.NUM_CLASSES")
    bad = Instances(SIZE, gt_boxes=Boxes(torch.ones(2, 4)), gt_classes=torch.tensor([2, 3]))
    with pytest.raises(
        ValueError, match=r"ground-truth class 3 is outside \[0, 3\): MODEL\.X\.NUM_CLASSES is 3"
    ):
        check_gt_classes([empty, bad], 3, "MODEL.X.NUM_CLASSES")


# On CUDA the check is an asynchronous device assert (no host sync per step), which leaves the
# CUDA context unusable: run in its own process.
CUDA_SCRIPT = """
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from d2ext.config import get_cfg, merge_from_file

cfg = merge_from_file(get_cfg(), {config!r})
cfg.MODEL.DEVICE = "cuda"
model = build_model(cfg).train()
instances = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[4.0, 4.0, 40.0, 36.0]])),
                      gt_classes=torch.tensor([{bad}]))
with EventStorage():
    losses = model([{{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "instances": instances}}])
    sum(losses.values()).backward()
torch.cuda.synchronize()
print("NO ERROR")
"""


@pytest.mark.parametrize("device", [conftest.CUDA])
def test_cuda_model_asserts_on_gt_class_outside_num_classes(device):
    import subprocess
    import sys

    script = CUDA_SCRIPT.format(config=TINY.format("atss"), bad=99)
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=conftest.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0 and "NO ERROR" not in output and "device-side assert" in output, (
        output
    )
