"""Issue #15 item 8: a zero-width or inverted GT box that reaches the model (a custom mapper)
is ignored by every method, as the ATSS family's assignment ignores it: finite losses equal to
those of the batch without that box."""

import logging
import os

import conftest
import pytest
import torch
from conftest import CONFIGS
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

TINY = os.path.join(CONFIGS, "Synthetic", "{}_R_18_FPN_tiny.yaml")
SIZE = (128, 160)
CLEAN = [[[10, 10, 60, 50], [70, 20, 150, 110]], [[5, 5, 20, 30]]]
# Zero width, inverted in x, zero height: each inserted in the first image.
DEGENERATE = [[30, 30, 30, 70], [90, 30, 40, 70], [20, 80, 60, 80]]


def losses(model, boxes_per_image, classes_per_image):
    inputs = conftest.make_inputs(boxes_per_image, SIZE)
    for x, classes in zip(inputs, classes_per_image):
        x["instances"].gt_classes = torch.tensor(classes, dtype=torch.int64)
    torch.manual_seed(3)  # the R-CNN samplers draw at random
    with EventStorage():
        return {k: v.item() for k, v in model(inputs).items()}


@pytest.mark.parametrize("method", ["aploss_retinanet", "libra_faster_rcnn", "atss"])
def test_degenerate_gt_boxes_are_ignored(method, monkeypatch):
    from d2ext.modeling import input_checks

    monkeypatch.setattr(input_checks, "_warned_degenerate", False, raising=False)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    # On the logger itself: d2ext's setup_logger stops d2ext.* propagating to caplog's root handler.
    logging.getLogger(input_checks.__name__).addHandler(handler)
    monkeypatch.setattr(logging.getLogger(input_checks.__name__), "level", logging.INFO)
    torch.manual_seed(0)
    model = build_model(conftest.tiny_cfg(TINY.format(method)))
    model.train()
    clean = losses(model, CLEAN, [[0, 1], [2]])
    # Same classes for the kept boxes; the degenerate ones get class 3.
    with_bad = [CLEAN[0][:1] + DEGENERATE + CLEAN[0][1:], CLEAN[1]]
    try:
        dirty = losses(model, with_bad, [[0, 3, 3, 3, 1], [2]])
        losses(model, with_bad, [[0, 3, 3, 3, 1], [2]])
    finally:
        logging.getLogger(input_checks.__name__).removeHandler(handler)
    assert all(torch.isfinite(torch.tensor(v)) for v in dirty.values()), dirty
    assert dirty == pytest.approx(clean, rel=1e-6, abs=1e-7)
    if method != "atss":  # the ATSS family never assigns them: nothing to drop, nothing to say
        messages = [r.getMessage() for r in records]
        assert (
            len(messages) == 1
            and "ignoring 3 ground-truth box(es) with zero or negative width" in messages[0]
        ), messages
