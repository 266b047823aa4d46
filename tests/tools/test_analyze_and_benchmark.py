"""d2ext-analyze-model and d2ext-benchmark (d2ext/tools/analyze_model.py, benchmark.py) and the FLOP
handles of d2ext/utils/flops.py, on hand-counted modules and the tiny synthetic configs."""

import os

import pytest
import torch
from conftest import CONFIGS, TINY_CONFIG, build_tiny_model
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torchvision.ops import roi_align

from d2ext.layers import DeformConv2d, aligned_iou, combined_iou, has_ops, pairwise_iou
from d2ext.tools import analyze_model, benchmark
from d2ext.utils.flops import add_flop_handles, skipped_ops

VFNET_CONFIG = os.path.join(CONFIGS, "Synthetic", "vfnet_R_18_FPN_tiny.yaml")
LAZY_CONFIG = os.path.join(CONFIGS, "Synthetic", "atss_R_18_FPN_tiny.py")
MINIVAL = "d2ext_shapes_minival"  # 40 images
SMALL_TEST = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]


class ConvThenDeform(nn.Module):
    """A conv, a conv predicting the offsets (and the mask), and a deformable conv."""

    def __init__(self, stride, groups, modulated):
        super().__init__()
        self.modulated = modulated
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.offset = nn.Conv2d(8, 27 if modulated else 18, 3, padding=1, stride=stride)
        self.deform = DeformConv2d(8, 6, 3, padding=1, stride=stride, groups=groups)

    def forward(self, x):
        y = self.conv(x)
        offset = self.offset(y)
        mask = offset[:, 18:] if self.modulated else None
        return self.deform(y, offset[:, :18], mask)


def count(model, *inputs):
    return add_flop_handles(FlopCountAnalysis(model, inputs).unsupported_ops_warnings(False))


@pytest.mark.parametrize(
    "stride,groups,modulated,conv,deform",
    [
        # input (1, 4, 8, 10): conv 8*4*9 MACs at 8x10; offsets 18*8*9 at 8x10;
        # deform: dense 6*(8/1)*9 at 8x10 + sampling 8 channels * 9 points * 8x10 * 4.
        (1, 1, False, 8 * 4 * 9 * 80 + 18 * 8 * 9 * 80, 6 * 8 * 9 * 80 + 8 * 9 * 80 * 4),
        # stride 2 (4x5 outputs), 2 weight groups, a mask: offsets+mask 27*8*9 at 4x5; deform:
        # dense 6*(8/2)*9 at 4x5 + sampling 8*9*20*4 + the mask's product 8*9*20.
        (
            2,
            2,
            True,
            8 * 4 * 9 * 80 + 27 * 8 * 9 * 20,
            6 * 4 * 9 * 20 + 8 * 9 * 20 * 4 + 8 * 9 * 20,
        ),
    ],
    ids=["plain", "stride2-groups2-mask"],
)
def test_deform_conv_flops_equal_hand_count(stride, groups, modulated, conv, deform):
    model = ConvThenDeform(stride, groups, modulated).eval()
    flops = count(model, torch.rand(1, 4, 8, 10))
    assert flops.by_operator() == {"conv": conv, "deform_conv": deform}
    assert flops.total() == conv + deform
    assert not skipped_ops(flops)


def test_roi_align_and_vector_matmul_handles():
    class Model(nn.Module):
        def forward(self, x, boxes, logits):
            pooled = roi_align(x, boxes, output_size=(2, 3), sampling_ratio=3)
            return pooled, logits.softmax(-1) @ torch.arange(8.0)  # GFL's integral

    boxes = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0], [0, 1.0, 1.0, 6.0, 5.0]])
    flops = count(Model(), torch.rand(1, 5, 8, 8), boxes, torch.rand(2, 3, 8))
    # roi_align: 2 boxes * 5 channels * 2x3 bins * 3x3 samples * 4 (bilinear);
    # matmul: 2*3 dot products of length 8.
    assert flops.by_operator() == {"roi_align": 2 * 5 * 6 * 9 * 4, "matmul": 2 * 3 * 8}


def test_d2ext_iou_op_handles():
    if not has_ops():  # the references are ordinary torch code, which fvcore ignores
        pytest.skip("d2ext's compiled ops are not built")

    class Model(nn.Module):
        def forward(self, a, b):
            return (
                pairwise_iou(a, b),
                pairwise_iou(a, b, "giou"),
                aligned_iou(a, a + 1),
                combined_iou(a, a + 1, b),
            )

    a, b = torch.tensor([[0, 0, 4, 4.0]]).repeat(3, 1), torch.tensor([[1, 1, 5, 5.0]]).repeat(5, 1)
    flops = count(Model(), a, b)
    # 3x5 IoUs at 2 and 3x5 GIoUs at 4; 3 aligned IoUs at 2; 3x5 combined at 2 * 2 + 2.
    expected = {"pairwise_iou": 15 * 2 + 15 * 4, "aligned_iou": 3 * 2, "combined_iou": 15 * 6}
    assert flops.by_operator() == expected


@pytest.mark.parametrize("config", [TINY_CONFIG, VFNET_CONFIG], ids=["atss", "vfnet"])
def test_analyze_flops_of_tiny_models(config, capsys):
    argv = [
        "--tasks",
        "flop",
        "-n",
        "1",
        "--config-file",
        config,
        "--test-dataset",
        MINIVAL,
        *SMALL_TEST,
    ]
    result = analyze_model.main(argv)["flop"]
    out = capsys.readouterr().out
    assert "| module" in out and "#flops" in out and "Total GFLOPs" in out
    assert result["total"] > 0
    assert result["skipped"] == {}, result["skipped"]  # the deform op included
    assert "Not counted" not in out and "deform_conv2d" not in out
    if config == VFNET_CONFIG:
        assert result["by_operator"]["deform_conv"] > 0


def test_analyze_parameters_equal_numel(capsys):
    result = analyze_model.main(["--tasks", "parameter", "--config-file", TINY_CONFIG])["parameter"]
    expected = sum(p.numel() for p in build_tiny_model(TINY_CONFIG).parameters())
    assert result["total"] == expected
    assert f"Parameters: {expected}" in capsys.readouterr().out


def test_analyze_lazy_config_counts_like_its_yaml_twin():
    lazy = analyze_model.main(["--tasks", "parameter", "--config-file", LAZY_CONFIG])
    yaml = analyze_model.main(["--tasks", "parameter", "--config-file", TINY_CONFIG])
    assert lazy["parameter"]["total"] == yaml["parameter"]["total"]


@pytest.mark.parametrize("task", ["train", "eval"])
def test_benchmark_prints_timing(task, capsys):
    argv = [
        "--task",
        task,
        "--num-iter",
        "2",
        "--warmup",
        "1",
        "--config-file",
        TINY_CONFIG,
        "--train-dataset",
        MINIVAL,
        "--test-dataset",
        MINIVAL,
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "INPUT.MIN_SIZE_TRAIN",
        "(96,)",
        "INPUT.MAX_SIZE_TRAIN",
        "128",
        *SMALL_TEST,
    ]
    result = benchmark.main(argv)
    assert result["iterations"] == 2 and result["seconds"] > 0
    assert f"{task}: 2 iterations in " in capsys.readouterr().out
