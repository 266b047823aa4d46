"""`make gpu-test` (dev/gpu_test.sh) without CUDA, and what it would run: the cuda-marked tests."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is available: gpu_test.sh would run everything"
)
def test_without_cuda_it_says_so_and_exits_0():
    env = dict(os.environ, PY=sys.executable)
    result = subprocess.run(
        ["bash", "dev/gpu_test.sh"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "no CUDA device visible to torch" in result.stdout


def test_cuda_marked_tests_are_collected():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-m",
            "cuda",
            "-p",
            "no:cacheprovider",
            "tests",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    listed = result.stdout
    for expected in [
        "test_ops_on_device.py::test_op_on_device_matches_cpu_kernel_and_reference[ap_loss-cuda-True]",
        "test_ops_on_device.py::test_ops_compute_in_float32_under_autocast[atss_assign-cuda]",
        "test_fused_losses.py::test_sigmoid_losses_match_reference[focal-sum-dtype0-cuda]",
        "test_amp.py::test_autocast_step_matches_float32[vfnet-cuda]",
        "test_amp.py::test_amp_trainer_on_cuda_runs_float16_with_scaler_in_checkpoint",
        "test_gpu_training.py::test_amp_training_on_cuda_then_evaluation[libra_faster_rcnn]",
        "test_benchmark_ops.py::test_device_cuda_times_and_measures_cuda_memory",
    ]:
        assert expected in listed, expected
    assert "-cpu]" not in listed  # -m cuda selects the cuda parameters only
