"""Without d2ext._C every op falls back to its reference: same results as the kernels (values
and gradients), and a single warning for the whole process."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from d2ext.layers import has_ops

# Runs every public op on fixed inputs; prints nothing, saves outputs and gradients to argv[1].
SCRIPT = r"""
import sys, warnings, torch
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from d2ext import layers
    g = torch.Generator().manual_seed(0)
    def boxes(n):
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 50
        return torch.cat([xy, xy + torch.rand(n, 2, generator=g, dtype=torch.float64) * 30 + 1], 1)
    a, b, p = boxes(40), boxes(7), boxes(40)
    logits = torch.randn(40, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(-1, 6, (40,), generator=g)
    scores = torch.rand(40, generator=g, dtype=torch.float64)
    bins = torch.randn(40, 9, generator=g, dtype=torch.float64)
    target = torch.rand(40, generator=g, dtype=torch.float64) * 8
    out = {
        "pairwise_iou": layers.pairwise_iou(a, b, "giou"),
        "aligned_iou": layers.aligned_iou(a, p),
        "combined_iou": layers.combined_iou(a, p, b, 0.5, 1.5),
        "atss_assign": torch.cat([t.double() for t in layers.atss_assign(a, [30, 10], b, 9, p)]),
    }
    for name, fn in {
        "giou_loss": lambda x: layers.giou_loss(x, b.repeat(6, 1)[:40], scores),
        "sigmoid_focal_loss": lambda x: layers.sigmoid_focal_loss(x, labels, weight=scores),
        "quality_focal_loss": lambda x: layers.quality_focal_loss(x, labels, scores, reduction="mean"),
        "varifocal_loss": lambda x: layers.varifocal_loss(x, labels, scores),
        "distribution_focal_loss": lambda x: layers.distribution_focal_loss(x, target),
        "ap_loss": lambda x: layers.ap_loss(x, labels),
    }.items():
        leaf = {"giou_loss": p, "distribution_focal_loss": bins}.get(name, logits).clone().requires_grad_(True)
        value = fn(leaf)
        value.backward()
        out[name] = value.detach()
        out[name + "/grad"] = leaf.grad
messages = [str(w.message) for w in caught if "compiled ops" in str(w.message)]
out["warnings"] = messages
out["has_ops"] = layers.has_ops()
torch.save(out, sys.argv[1])
"""


def run_script(path, disable):
    env = dict(os.environ, D2EXT_DISABLE_OPS="1" if disable else "0")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, path], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(path)


@pytest.mark.skipif(not has_ops(), reason="needs the kernels to compare against")
def test_fallback_equals_kernels_and_warns_once(tmp_path):
    fallback = run_script(str(tmp_path / "fallback.pt"), disable=True)
    kernels = run_script(str(tmp_path / "kernels.pt"), disable=False)
    assert not fallback.pop("has_ops") and kernels.pop("has_ops")
    assert len(fallback.pop("warnings")) == 1 and kernels.pop("warnings") == []
    assert set(fallback) == set(kernels)
    for name in kernels:
        torch.testing.assert_close(fallback[name], kernels[name], msg=name)
