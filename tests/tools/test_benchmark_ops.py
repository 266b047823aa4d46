"""tools/benchmark_ops.py's timing: implementations take turns, and every one runs enough."""

import importlib.util
import os

import pytest

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "benchmark_ops", os.path.join(TOOLS, "benchmark_ops.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fns_take_turns_and_each_gets_its_runs(bench):
    log = []
    fns = {"a": lambda: log.append("a"), "b": lambda: log.append("b")}
    times = bench.interleaved_seconds(fns, repeats=3, min_total=0.02, max_repeats=400, turn=0.0)
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
    # turn=0: one run per turn, so the log alternates a, b, a, b, ...
    runs = log
    assert runs[0::2] == ["a"] * len(runs[0::2]) and runs[1::2] == ["b"] * len(runs[1::2])
    assert len(runs) == 2 * 400  # the runs never add up to 0.02 s, so up to max_repeats each


def test_slow_fn_stops_at_repeats_fast_fn_at_min_total(bench):
    import time

    counts = {"slow": 0, "fast": 0}

    def slow():
        counts["slow"] += 1
        time.sleep(0.03)

    def fast():
        counts["fast"] += 1

    bench.interleaved_seconds(
        {"slow": slow, "fast": fast}, repeats=2, min_total=0.05, max_repeats=50
    )
    assert counts["slow"] == 2  # max(repeats, what adds up to 0.05 s)
    assert counts["fast"] == 50  # a no-op never adds up to 0.05 s: max_repeats


def _benchmark(*args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, os.path.join(TOOLS, "benchmark_ops.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_device_cuda_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = _benchmark("--device", "cuda", "--quick")
    assert result.returncode != 0 and "--device cuda: torch sees no CUDA device" in result.stderr


@pytest.mark.cuda
def test_device_cuda_times_and_measures_cuda_memory():
    result = _benchmark(
        "--device", "cuda", "--quick", "--no-compile", "--only", "giou_loss,sigmoid_focal_loss"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "cuda:" in result.stdout and "| giou_loss | kernel |" in result.stdout


def test_deform_conv2d_rows_have_ratios_to_d2exts_path():
    result = _benchmark("--quick", "--no-compile", "--repeats", "1", "--only", "deform_conv2d")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| deform_conv2d |")]
    assert [r.split("|")[2].strip() for r in rows] == ["grid_sample+matmul", "torchvision"]
    assert rows[0].split("|")[5].strip() == "1.0x" and rows[1].split("|")[5].strip().endswith("x")
