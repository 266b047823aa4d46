"""The compiled integer-label ops (torch.ops.d2ext.*, not their Python wrappers, which check too)
refuse a label outside [-1, K] (-1 = ignored, K = background) instead of reading it as background
(> K) or ignored (< -1): on the CPU an error naming the value and its index, on CUDA a device-side
assert (no host sync; checked in a subprocess, as it leaves the CUDA context unusable). Valid
labels give the reference's values."""

import subprocess
import sys

import pytest
import torch
from conftest import CUDA, REPO_ROOT

from d2ext.layers import has_ops, reference

pytestmark = pytest.mark.skipif(not has_ops(), reason="d2ext._C is not built")

K = 4
LABELS = [0, 3, K, -1, 1, 2, K, 0]  # every kind of valid label: classes, background, ignored
BAD_INDEX = 5


def _inputs(labels, device="cpu"):
    g = torch.Generator().manual_seed(0)
    n = len(labels)
    logits = (torch.randn(n, K, generator=g, dtype=torch.float64) * 3).to(device)
    scores = torch.rand(n, generator=g, dtype=torch.float64).to(device)
    weight = torch.rand(n, generator=g, dtype=torch.float64).to(device)
    return logits, torch.tensor(labels, device=device), scores, weight


# name -> the raw op call (reduction 0 = "none" where it has one)
OPS = {
    "sigmoid_focal_loss": lambda x, l, s, w: torch.ops.d2ext.sigmoid_focal_loss(
        x, l, w, 0.25, 2.0, 0
    ),
    "_sigmoid_focal_loss_backward": lambda x, l, s, w: torch.ops.d2ext._sigmoid_focal_loss_backward(
        torch.ones_like(x), x, l, w, 0.25, 2.0, 0
    ),
    "quality_focal_loss": lambda x, l, s, w: torch.ops.d2ext.quality_focal_loss(x, l, s, w, 2.0, 0),
    "_quality_focal_loss_backward": lambda x, l, s, w: torch.ops.d2ext._quality_focal_loss_backward(
        torch.ones_like(x), x, l, s, w, 2.0, 0
    ),
    "varifocal_loss": lambda x, l, s, w: torch.ops.d2ext.varifocal_loss(
        x, l, s, w, 0.75, 2.0, True, 0
    ),
    "_varifocal_loss_backward": lambda x, l, s, w: torch.ops.d2ext._varifocal_loss_backward(
        torch.ones_like(x), x, l, s, w, 0.75, 2.0, True, 0
    ),
    "ap_loss": lambda x, l, s, w: torch.ops.d2ext.ap_loss(x, l, 1.0, True),
}

# The Python references of the forward ops, same arguments.
REFERENCES = {
    "sigmoid_focal_loss": lambda x, l, s, w: reference.sigmoid_focal_loss(
        x, l, 0.25, 2.0, w, "none"
    ),
    "quality_focal_loss": lambda x, l, s, w: reference.quality_focal_loss(x, l, s, 2.0, w, "none"),
    "varifocal_loss": lambda x, l, s, w: reference.varifocal_loss(
        x, l, s, 0.75, 2.0, True, w, "none"
    ),
    "ap_loss": lambda x, l, s, w: reference.ap_loss(x, l, 1.0, True),
}


@pytest.mark.parametrize("bad", [K + 1, 99, -2])
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_refuses_label_outside_range_naming_value_and_index(name, bad):
    labels = list(LABELS)
    labels[BAD_INDEX] = bad
    with pytest.raises(
        RuntimeError, match=rf"labels must be in \[-1, {K}\].*got {bad} at index {BAD_INDEX}"
    ):
        OPS[name](*_inputs(labels))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_op_matches_reference_on_valid_labels(name):
    args = _inputs(LABELS)
    out, expected = OPS[name](*args), REFERENCES[name](*args)
    for o, e in zip(*(t if isinstance(t, tuple) else (t,) for t in (out, expected))):
        torch.testing.assert_close(o, e)


@pytest.mark.parametrize("name", [n for n in sorted(OPS) if n.endswith("_backward")])
def test_backward_op_matches_autograd_of_reference_on_valid_labels(name):
    logits, labels, scores, weight = _inputs(LABELS)
    logits.requires_grad_(True)
    forward = REFERENCES[name[1 : -len("_backward")]]
    (expected,) = torch.autograd.grad(forward(logits, labels, scores, weight).sum(), logits)
    torch.testing.assert_close(OPS[name](logits.detach(), labels, scores, weight), expected)


# A device-side assert leaves the CUDA context unusable: each case runs in its own process.
CUDA_SCRIPT = """
import sys, torch
import d2ext.layers
g = torch.Generator().manual_seed(0)
labels = [0, 3, {k}, -1, 1, {bad}, {k}, 0]
x = torch.randn(len(labels), {k}, generator=g, dtype=torch.float64).cuda()
l = torch.tensor(labels).cuda()
s = w = torch.rand(len(labels), generator=g, dtype=torch.float64).cuda()
{call}
torch.cuda.synchronize()
print("NO ERROR")
"""
CUDA_CALLS = {
    "sigmoid_focal_loss": "torch.ops.d2ext.sigmoid_focal_loss(x, l, w, 0.25, 2.0, 1)",
    "_quality_focal_loss_backward": (
        "torch.ops.d2ext._quality_focal_loss_backward(torch.ones_like(x), x, l, s, w, 2.0, 0)"
    ),
    "varifocal_loss": "torch.ops.d2ext.varifocal_loss(x, l, s, w, 0.75, 2.0, True, 2)",
    "ap_loss": "torch.ops.d2ext.ap_loss(x, l, 1.0, True)",
}


@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("name", sorted(CUDA_CALLS))
def test_cuda_op_asserts_on_label_outside_range(name, device):
    script = CUDA_SCRIPT.format(k=K, bad=K + 1, call=CUDA_CALLS[name])
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0 and "NO ERROR" not in output, output
    # The device assert names the failed condition (the CPU call names the value and index).
    assert "device-side assert" in output and "label_in_range" in output, output
