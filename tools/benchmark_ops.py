#!/usr/bin/env python
"""
Benchmarks d2ext's compiled ops against their pure-PyTorch references (d2ext.layers.reference),
eager and under torch.compile, all measured in the same run on this machine. Prints forward +
backward time and peak extra memory per op and the ratios reference / kernel.

    python tools/benchmark_ops.py               # realistic sizes (takes a few minutes)
    python tools/benchmark_ops.py --quick       # small sizes, a smoke run
    python tools/benchmark_ops.py --no-compile  # skip torch.compile(reference)
    python tools/benchmark_ops.py --only distribution_focal_loss,giou_loss  # some ops only
    python tools/benchmark_ops.py --device cuda  # on the GPU (`make gpu-test` runs it)

Times are medians of --repeats runs (more for fast ops: at least 1 s of runs), the kernel, the
reference and the compiled reference taking turns, with large blocks reused from glibc's heap
(as its dynamic mmap threshold settles after large frees).
On CUDA every run ends with torch.cuda.synchronize() (so the time covers the kernels) and the
peak is torch.cuda.max_memory_allocated() above what was allocated before the run.
On the CPU, peak memory: the growth of the process's resident set (VmHWM, reset before each run through
/proc/self/clear_refs) while glibc returns every freed block to the system, so it counts every
allocation, not only torch's.
"""

import d2ext  # noqa: F401  first: sets the process environment before torch loads (d2ext/environment.py)

# isort: split
import argparse
import gc
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

from d2ext import layers
from d2ext.layers import reference

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _libc(name: str, *args) -> None:
    import ctypes

    try:
        getattr(ctypes.CDLL("libc.so.6"), name)(*args)
    except (OSError, AttributeError):
        pass


def _timing_allocator() -> None:
    """Large blocks from the heap (as glibc's dynamic threshold ends up after large frees)."""
    _libc("mallopt", M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    _libc("mallopt", M_TRIM_THRESHOLD, 64 * 1024 * 1024)


def _measuring_allocator() -> None:
    """Every large block mmapped and unmapped on free, so VmHWM measures one run's peak."""
    _libc("mallopt", M_MMAP_THRESHOLD, 64 * 1024)
    _libc("mallopt", M_TRIM_THRESHOLD, 64 * 1024)
    _libc("malloc_trim", 0)  # give back what the timing runs left in the heap


def _read_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


DEVICE = torch.device("cpu")  # set by --device


def synchronized(fn: Callable[[], object]) -> Callable[[], object]:
    """fn, waiting for its CUDA kernels to finish (timings would otherwise measure launches)."""
    if DEVICE.type != "cuda":
        return fn

    def run():
        result = fn()
        torch.cuda.synchronize(DEVICE)
        return result

    return run


def cuda_peak_extra_mb(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize(DEVICE)
    torch.cuda.reset_peak_memory_stats(DEVICE)
    before = torch.cuda.memory_allocated(DEVICE)
    result = fn()
    peak = torch.cuda.max_memory_allocated(DEVICE)
    del result
    return (peak - before) / 2**20


def peak_extra_mb(fn: Callable[[], object]) -> Optional[float]:
    """Peak memory growth while fn runs, in MB: CUDA's allocator on cuda, the resident set on
    the CPU (None where its peak cannot be reset)."""
    if DEVICE.type == "cuda":
        return cuda_peak_extra_mb(fn)
    _measuring_allocator()
    try:
        return _peak_extra_mb(fn)
    finally:
        _timing_allocator()


def _peak_extra_mb(fn: Callable[[], object]) -> Optional[float]:
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _read_status_kb("VmRSS")
    result = fn()
    peak = _read_status_kb("VmHWM")
    del result
    return (peak - before) / 1024


def interleaved_seconds(
    fns: Dict[str, Callable[[], object]],
    repeats: int,
    min_total: float = 1.0,
    max_repeats: int = 500,
    turn: float = 0.05,
) -> Dict[str, float]:
    """Median time of each fn over at least `repeats` runs, and more (up to max_repeats) until they
    add up to min_total seconds: a millisecond op's median over 3 runs is mostly noise here.
    The fns take turns (about `turn` seconds of runs each), so that a slower or faster spell of
    this shared machine affects every fn alike instead of the ratios. Warm the fns up first."""
    times: Dict[str, List[float]] = {name: [] for name in fns}

    def wanted(ts: List[float]) -> bool:
        return len(ts) < repeats or (sum(ts) < min_total and len(ts) < max_repeats)

    while any(wanted(ts) for ts in times.values()):
        for name, fn in fns.items():
            ts, spent = times[name], 0.0
            while wanted(ts):  # at least one run per turn, then up to `turn` seconds of them
                start = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - start)
                spent += ts[-1]
                if spent >= turn:
                    break
    return {name: statistics.median(ts) for name, ts in times.items()}


def forward_backward(
    loss_fn: Callable, leaf: torch.Tensor, *args, **kwargs
) -> Callable[[], object]:
    """A closure running loss_fn forward and backward with respect to `leaf`."""

    def run():
        x = leaf.detach().requires_grad_(True)
        out = loss_fn(x, *args, **kwargs)
        out.sum().backward()
        return x.grad

    return run


def measure(name: str, impls: Dict[str, Callable[[], object]], repeats: int) -> List[dict]:
    rows, working = [], {}
    for impl, fn in impls.items():
        fn = synchronized(fn)
        try:
            fn()  # warm-up (and compilation for torch.compile); errors show here
            mem = peak_extra_mb(fn)
        except Exception as e:  # e.g. torch.compile unavailable: report, keep going
            rows.append({"op": name, "impl": impl, "error": f"{type(e).__name__}: {str(e)[:80]}"})
            continue
        working[impl] = fn
        rows.append({"op": name, "impl": impl, "peak_mb": mem})
    times = interleaved_seconds(working, repeats)
    for row in rows:
        if "error" in row:
            continue
        row["seconds"] = t = times[row["impl"]]
        mem = row["peak_mb"]
        mem = mem if mem is not None else float("nan")
        print(f"  {name:<28} {row['impl']:<18} {t * 1e3:10.2f} ms   peak +{mem:8.1f} MB")
    return rows


def boxes(n: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 4 + 1
    return torch.cat([xy, xy + wh], dim=1).to(DEVICE)


def fpn_anchors(image_hw, strides=(8, 16, 32, 64, 128)):
    levels = []
    for s in strides:
        h, w = -(-image_hw[0] // s), -(-image_hw[1] // s)
        ys, xs = torch.meshgrid(torch.arange(h) * s, torch.arange(w) * s, indexing="ij")
        c = torch.stack([xs.flatten(), ys.flatten()], 1).float()
        levels.append(torch.cat([c - 4 * s, c + 4 * s], 1))
    return torch.cat(levels).to(DEVICE), [len(x) for x in levels]


class Sizes:
    """Realistic sizes (the issue's), or small ones for a smoke run."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.anchors, self.gt, self.classes = (5000, 50, 80) if quick else (100_000, 200, 80)


def bench_pairwise_iou(sz: Sizes, compiled: bool, repeats: int) -> List[dict]:
    """Matching: forward only."""
    a, b = boxes(sz.anchors, 800, 0), boxes(sz.gt, 800, 1)
    print(f"pairwise_iou: {sz.anchors} x {sz.gt}")
    impls = {
        "kernel": lambda: layers.pairwise_iou(a, b),
        "reference": lambda: reference.pairwise_iou(a, b),
    }
    if compiled:
        compiled_iou = torch.compile(reference.pairwise_iou)
        impls["compiled reference"] = lambda: compiled_iou(a, b)
    return measure("pairwise_iou", impls, repeats)


def sigmoid_loss_inputs(sz: Sizes):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(sz.anchors, sz.classes, generator=g) * 3
    labels = torch.randint(0, sz.classes + 1, (sz.anchors,), generator=g)
    labels[torch.rand(sz.anchors, generator=g) < 0.9] = sz.classes  # mostly background
    scores = torch.rand(sz.anchors, generator=g)
    return logits.to(DEVICE), labels.to(DEVICE), scores.to(DEVICE)


def bench_loss(
    name: str, leaf: torch.Tensor, extra: tuple, compiled: bool, repeats: int
) -> List[dict]:
    """Forward + backward of layers.<name> against reference.<name> (and its compiled version)."""
    op, ref = getattr(layers, name), getattr(reference, name)
    impls = {
        "kernel": forward_backward(op, leaf, *extra),
        "reference": forward_backward(ref, leaf, *extra),
    }
    if compiled:
        impls["compiled reference"] = forward_backward(torch.compile(ref), leaf, *extra)
    return measure(name, impls, repeats)


def bench_sigmoid_losses(names: List[str], sz: Sizes, compiled: bool, repeats: int) -> List[dict]:
    logits, labels, scores = sigmoid_loss_inputs(sz)
    print(f"focal-family losses: {sz.anchors} x {sz.classes} logits, forward + backward")
    extras = {
        "sigmoid_focal_loss": (labels,),
        "quality_focal_loss": (labels, scores),
        "varifocal_loss": (labels, scores),
    }
    return [
        row for name in names for row in bench_loss(name, logits, extras[name], compiled, repeats)
    ]


def bench_distribution_focal_loss(sz: Sizes, compiled: bool, repeats: int) -> List[dict]:
    g = torch.Generator().manual_seed(2)
    bins = torch.randn(sz.anchors * 4 // 10, 17, generator=g)
    target = torch.rand(bins.shape[0], generator=g) * 15.9
    bins, target = bins.to(DEVICE), target.to(DEVICE)
    print(f"distribution_focal_loss: {bins.shape[0]} x 17 bins, forward + backward")
    return bench_loss("distribution_focal_loss", bins, (target,), compiled, repeats)


def bench_giou_loss(sz: Sizes, compiled: bool, repeats: int) -> List[dict]:
    n_pos = sz.anchors  # 100k pairs: below that the call overhead dominates
    pred, tgt = boxes(n_pos, 800, 3), boxes(n_pos, 800, 4)
    print(f"giou_loss: {n_pos} pairs, forward + backward")
    return bench_loss("giou_loss", pred, (tgt,), compiled, repeats)


def bench_atss_assign(sz: Sizes, compiled: bool, repeats: int) -> List[dict]:
    """One image."""
    image = (640, 800) if sz.quick else (3072, 4096)  # 261k anchors over P3-P7 (one per location)
    anchors, levels = fpn_anchors(image)
    m = 100 if sz.quick else 1000
    gt = boxes(m, min(image), 5)
    print(f"atss_assign: {len(anchors)} anchors x {m} GT")
    impls = {
        "kernel": lambda: layers.atss_assign(anchors, levels, gt, 9),
        "reference": lambda: reference.atss_assign(anchors, levels, gt, 9),
    }
    if compiled:
        compiled_assign = torch.compile(reference.atss_assign)
        impls["compiled reference"] = lambda: compiled_assign(anchors, levels, gt, 9)
    rows = measure("atss_assign", impls, max(1, repeats - 1))
    assert torch.equal(
        layers.atss_assign(anchors, levels, gt, 9)[0],
        reference.atss_assign(anchors, levels, gt, 9)[0],
    )
    return rows


def bench_ap_loss(sz: Sizes, compiled: bool, repeats: int) -> List[dict]:
    """1k positives against as many negatives as the O(P x N) reference handles in about a minute,
    then the kernel alone at 100k anchors x 80 classes."""
    n_rows = 1250 if sz.quick else 12_500
    logits, labels = ap_loss_inputs(n_rows, sz.classes, n_pos=100 if sz.quick else 1000, seed=6)
    print(
        f"ap_loss: {n_rows * sz.classes} entries ({(labels < sz.classes).sum().item()} positive), forward + backward"
    )
    impls = {
        "kernel": forward_backward(layers.ap_loss, logits, labels),
        "reference": lambda: reference.ap_loss(logits, labels),  # returns the update itself
    }
    rows = measure("ap_loss", impls, 1)
    logits, labels = ap_loss_inputs(sz.anchors, sz.classes, n_pos=sz.anchors // 50, seed=7)
    print(f"ap_loss (kernel only): {sz.anchors * sz.classes} entries, forward + backward")
    return rows + measure(
        "ap_loss, 100k x 80", {"kernel": forward_backward(layers.ap_loss, logits, labels)}, repeats
    )


def deform_conv2d_step(fn, x, offset, weight, mask=None, dense=False) -> Callable[[], object]:
    """Forward + backward of a 3x3 deformable convolution (padding 1) to input, offsets, weight
    and mask, or (dense) of F.conv2d of the same input and weight, to input and weight."""

    def step():
        leaves = [t.detach().requires_grad_(True) for t in (x, offset, weight)]
        if dense:
            out = torch.nn.functional.conv2d(leaves[0], leaves[2], padding=1)
        else:
            m = mask.detach().requires_grad_(True) if mask is not None else None
            out = fn(leaves[0], leaves[1], leaves[2], padding=1, mask=m)
        out.sum().backward()
        return leaves[0].grad

    return step


def deform_conv2d_inputs(n, c, h, w, modulated):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(n, c, h, w, generator=g).to(DEVICE)
    offset = (torch.randn(n, 18, h, w, generator=g) * 2).to(DEVICE)
    weight = (torch.randn(c, c, 3, 3, generator=g) * 0.01).to(DEVICE)
    mask = torch.rand(n, 9, h, w, generator=g).to(DEVICE) if modulated else None
    return x, offset, weight, mask


def bench_deform_conv2d(sz: Sizes, compiled: bool, repeats: int) -> List[dict]:
    """3x3 deformable convolutions, forward + backward to input, offsets, weight (and mask).

    "deform_conv2d": the grid_sample + matmul path (layers.sampled_deform_conv2d, DeformConv2d's
    CPU fallback without the compiled ops) against torchvision's op; full size: P3 of an
    800x1333 image, 2 images, 256 channels; quick: VFNet tiny's P3.
    "deform_conv2d op (...)": d2ext's op (torch.ops.d2ext.deform_conv2d through
    layers.deform_conv2d, what DeformConv2d runs on the CPU) against a dense F.conv2d of the same
    shape (the cost to approach) and, in full runs, the grid_sample path and torchvision's op, on
    the issue's shapes: a VFNet head level, 8x64x36x60 -> 64 (DCN v1), and a backbone stage,
    2x256x50x84 -> 256 (modulated, DCN v2); quick: the head level, op and dense only."""
    from torchvision.ops import deform_conv2d

    n, c, h, w = (8, 64, 36, 60) if sz.quick else (2, 256, 100, 167)
    x, offset, weight, _ = deform_conv2d_inputs(n, c, h, w, False)
    print(f"deform_conv2d: {n}x{c}x{h}x{w}, 3x3, forward + backward")
    impls = {
        "grid_sample+matmul": deform_conv2d_step(layers.sampled_deform_conv2d, x, offset, weight),
        "torchvision": deform_conv2d_step(deform_conv2d, x, offset, weight),
    }
    rows = measure("deform_conv2d", impls, repeats)

    shapes = [("head", (8, 64, 36, 60), False)]
    if not sz.quick:
        shapes.append(("backbone, v2", (2, 256, 50, 84), True))
    for label, (n, c, h, w), modulated in shapes:
        x, offset, weight, mask = deform_conv2d_inputs(n, c, h, w, modulated)
        print(
            f"deform_conv2d op ({label}): {n}x{c}x{h}x{w} -> {c}, 3x3{', with mask' if modulated else ''}, "
            "forward + backward"
        )
        impls = {
            "kernel": deform_conv2d_step(layers.deform_conv2d, x, offset, weight, mask),
            "dense conv2d": deform_conv2d_step(None, x, offset, weight, dense=True),
        }
        if not sz.quick:
            impls["grid_sample+matmul"] = deform_conv2d_step(
                layers.sampled_deform_conv2d, x, offset, weight, mask
            )
            impls["torchvision"] = deform_conv2d_step(deform_conv2d, x, offset, weight, mask)
        measured = measure(f"deform_conv2d op ({label})", impls, repeats)
        seconds = {r["impl"]: r["seconds"] for r in measured if "seconds" in r}
        if "kernel" in seconds and "dense conv2d" in seconds:
            ratios = [f"op / dense conv2d {seconds['kernel'] / seconds['dense conv2d']:.2f}x"]
            others = [name for name in seconds if name not in ("kernel", "dense conv2d")]
            ratios += [f"{name} / op {seconds[name] / seconds['kernel']:.2f}x" for name in others]
            print(f"  {label}: " + ", ".join(ratios))
        rows += measured
    return rows


SIGMOID_LOSSES = ["sigmoid_focal_loss", "quality_focal_loss", "varifocal_loss"]
OPS = (
    ["pairwise_iou"]
    + SIGMOID_LOSSES
    + ["distribution_focal_loss", "giou_loss", "atss_assign", "ap_loss", "deform_conv2d"]
)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile(reference)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where the ops run")
    parser.add_argument(
        "--only", default="", help=f"comma-separated ops to run, of: {', '.join(OPS)}"
    )
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name] or OPS
    unknown = sorted(set(only) - set(OPS))
    if unknown:
        raise SystemExit(f"--only: unknown op(s) {unknown}; choose from {', '.join(OPS)}")
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device: {args.device!r} is not cpu or cuda")
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {args.device}: torch sees no CUDA device (torch {torch.__version__})"
        )
    if not layers.has_ops():
        raise SystemExit(
            "d2ext._C is not built: run `make setup` (or python setup.py build_ext --inplace)"
        )
    _timing_allocator()
    sz, compiled, repeats = Sizes(args.quick), not args.no_compile, args.repeats
    where = (
        torch.cuda.get_device_name(DEVICE)
        if DEVICE.type == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__}, {DEVICE}: {where}")
    rows: List[dict] = []
    if "pairwise_iou" in only:
        rows += bench_pairwise_iou(sz, compiled, repeats)
    sigmoid = [name for name in SIGMOID_LOSSES if name in only]
    if sigmoid:
        rows += bench_sigmoid_losses(sigmoid, sz, compiled, repeats)
    benches = {
        "distribution_focal_loss": bench_distribution_focal_loss,
        "giou_loss": bench_giou_loss,
        "atss_assign": bench_atss_assign,
        "ap_loss": bench_ap_loss,
        "deform_conv2d": bench_deform_conv2d,
    }
    for name, bench in benches.items():
        if name in only:
            rows += bench(sz, compiled, repeats)
    print_table(rows)


def ap_loss_inputs(n_rows, n_classes, n_pos, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_rows, n_classes, generator=g) * 2 - 2
    labels = torch.full((n_rows,), n_classes, dtype=torch.int64)
    labels[torch.randperm(n_rows, generator=g)[:n_pos]] = torch.randint(
        0, n_classes, (n_pos,), generator=g
    )
    return logits.to(DEVICE), labels.to(DEVICE)


def print_table(rows: List[dict]) -> None:
    print()
    print("| op | impl | fwd+bwd ms | peak extra MB | time vs kernel | memory vs kernel |")
    print("|---|---|---:|---:|---:|---:|")
    # The base of each op's ratios: its first implementation (the kernel); no ratios if that one
    # failed.
    kernels = {}
    for r in rows:
        kernels.setdefault(r["op"], r)
    kernels = {op: r for op, r in kernels.items() if "seconds" in r}
    for r in rows:
        if "error" in r:
            print(f"| {r['op']} | {r['impl']} | failed: {r['error']} | | | |")
            continue
        k = kernels.get(r["op"])
        speed = f"{r['seconds'] / k['seconds']:.1f}x" if k else ""
        mem = ""
        if k and r["peak_mb"] is not None and k["peak_mb"] is not None and k["peak_mb"] >= 0.1:
            mem = f"{r['peak_mb'] / k['peak_mb']:.1f}x"
        peak = f"{r['peak_mb']:.1f}" if r["peak_mb"] is not None else "n/a"
        print(f"| {r['op']} | {r['impl']} | {r['seconds'] * 1e3:.2f} | {peak} | {speed} | {mem} |")


if __name__ == "__main__":
    main()
