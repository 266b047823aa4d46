"""
Times a model's training step, its inference or its data loading, as Detectron2's
tools/benchmark.py, from a yaml or a lazy (.py) config:

    d2ext-benchmark --task train --num-iter 50 \
        --config-file configs/Synthetic/atss_R_18_FPN_tiny.yaml
    d2ext-benchmark --task eval --config-file configs/Synthetic/atss_R_18_FPN_tiny.yaml \
        --test-dataset d2ext_shapes_minival MODEL.WEIGHTS output/atss_R_18_FPN_tiny/model_final.pth
    d2ext-benchmark --task data --config-file configs/Synthetic/atss_R_18_FPN_tiny.py

- train: forward, backward and optimizer step (SimpleTrainer, or d2ext's AMPTrainer when AMP is
  on) on up to 100 batches of the training loader, loaded once and cycled: data loading is not
  timed. The learning rate is 0.001 unless the overrides set it (as Detectron2's: a model at full
  rate without its warm-up can diverge). --profile saves a torch profiler trace of the last step.
- eval: inference on up to 100 test images (loaded once, cycled).
- data: the training loader itself (batches per second, startup time, RAM in use).
- data_advanced: Detectron2's DataLoaderBenchmark: the dataset alone, the mapper alone, the
  loader with 0, 1 and DATALOADER.NUM_WORKERS workers, and without inter-process transfer.

Weights: MODEL.WEIGHTS (train.init_checkpoint) through load_weights when set. Without weights
eval times the random initialisation, and says so: the speed of the network is the same, but
its post-processing may see more or fewer boxes than a trained model's. One process only.
"""

import argparse
import itertools
import logging
import statistics
import time

import torch
from detectron2.config import CfgNode, instantiate
from detectron2.data import build_detection_train_loader
from detectron2.data.benchmark import DataLoaderBenchmark, iter_benchmark
from detectron2.engine import HookBase, SimpleTrainer, hooks
from detectron2.utils.events import CommonMetricPrinter
from detectron2.utils.logger import setup_logger

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.checkpoint import load_weights
from d2ext.data import build_train_mapper
from d2ext.data.registration import add_dataset_arguments
from d2ext.engine import Trainer
from d2ext.engine.amp import AMPTrainer
from d2ext.engine.lazy import check_loader_classes
from d2ext.errors import ConfigError
from d2ext.tools.analyze_model import build_model, build_test_loader, setup_cfg, weights_of
from d2ext.tools.cli import add_config_arguments, command

logger = logging.getLogger("d2ext")
# Detectron2's iteration counts (timed iterations; data: batches per worker).
DEFAULT_ITERS = {"train": 400, "eval": 300, "data": 250, "data_advanced": 100}
WARMUP = {"train": 3, "eval": 5, "data": 10, "data_advanced": 10}  # untimed iterations first
MAX_CACHED = 100  # batches loaded for train / eval and cycled
BENCHMARK_LR = 0.001


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=sorted(DEFAULT_ITERS), required=True)
    parser.add_argument(
        "--num-iter",
        type=int,
        help="timed iterations (default: Detectron2's, "
        + ", ".join(f"{task} {n}" for task, n in DEFAULT_ITERS.items())
        + ")",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help="untimed iterations before them (default: "
        + ", ".join(f"{task} {n}" for task, n in WARMUP.items())
        + ")",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="train: save a torch profiler trace of the last step in the output dir",
    )
    add_config_arguments(parser)
    add_dataset_arguments(parser)  # --train-dataset (train, data), --test-dataset (eval)
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides (KEY VALUE ... for yaml, key=value for .py)",
    )
    return parser


def ram_msg() -> str:
    """The machine's RAM in use, as Detectron2's benchmark prints it (psutil or /proc/meminfo)."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        total, available = memory.total, memory.available
    except ImportError:
        try:
            with open("/proc/meminfo") as f:
                info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
            total, available = info["MemTotal"], info["MemAvailable"]
        except (OSError, KeyError, ValueError, IndexError):
            return "RAM usage: unknown"
    return f"RAM usage: {(total - available) / 1024**3:.2f}/{total / 1024**3:.2f} GB"


def report(task, times, images_per_iter, warmup):
    """Prints and returns the timing of the timed iterations."""
    total = sum(times)
    mean = total / len(times)
    print(
        f"{task}: {len(times)} iterations in {total:.3f} s: {mean:.4f} s/iter "
        f"(median {statistics.median(times):.4f} s), {images_per_iter / mean:.2f} images/s "
        f"after {warmup} warm-up iterations"
    )
    return {
        "iterations": len(times),
        "seconds": total,
        "seconds_per_iter": mean,
        "median_seconds_per_iter": statistics.median(times),
        "images_per_second": images_per_iter / mean,
    }


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def first_batches(loader, n):
    return list(itertools.islice(loader, n))


# -- train ----------------------------------------------------------------------------------------
class StepTimes(HookBase):
    """Each step's wall time (CUDA synchronised)."""

    def __init__(self):
        self.times = []

    def before_step(self):
        _sync()
        self._start = time.perf_counter()

    def after_step(self):
        _sync()
        self.times.append(time.perf_counter() - self._start)


def with_benchmark_lr(cfg, opts):
    """The config at lr 0.001 unless ``opts`` set it: no LR scheduler (and so no warm-up) runs
    here, and a model at its full rate can diverge within the timed steps."""
    if isinstance(cfg, CfgNode):
        if "SOLVER.BASE_LR" not in opts:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SOLVER.BASE_LR = BENCHMARK_LR
            cfg.freeze()
    elif not any(o.startswith("optimizer.lr=") for o in opts):
        cfg.optimizer.lr = BENCHMARK_LR
    return cfg


def build_for_training(cfg):
    """(model, optimizer, training loader, AMP on?) of a yaml or lazy config."""
    model = build_model(cfg)
    weights, key = weights_of(cfg)
    if weights:  # empty: the initialisation training starts from (no warning: that is normal)
        load_weights(model, weights, key=key)
    if isinstance(cfg, CfgNode):
        return (
            model,
            Trainer.build_optimizer(cfg, model),
            Trainer.build_train_loader(cfg),
            cfg.SOLVER.AMP.ENABLED,
        )
    cfg.optimizer.params.model = model
    loader = instantiate(cfg.dataloader.train)
    check_loader_classes(cfg, model, "train")
    return model, instantiate(cfg.optimizer), loader, cfg.train.amp.enabled


def output_dir(cfg):
    return cfg.OUTPUT_DIR if isinstance(cfg, CfgNode) else cfg.train.output_dir


def benchmark_train(cfg, args, num_iter, warmup):
    cfg = with_benchmark_lr(cfg, args.opts)
    model, optimizer, loader, amp = build_for_training(cfg)
    batches = first_batches(loader, min(warmup + num_iter, MAX_CACHED))
    del loader  # its workers
    trainer = (AMPTrainer if amp else SimpleTrainer)(model, itertools.cycle(batches), optimizer)
    step_times = StepTimes()
    last = warmup + num_iter - 1
    trainer.register_hooks(
        [
            hooks.IterationTimer(warmup_iter=warmup),
            step_times,
            hooks.PeriodicWriter([CommonMetricPrinter(warmup + num_iter)]),
            hooks.TorchProfiler(lambda t: t.iter == last, output_dir(cfg), save_tensorboard=False)
            if args.profile
            else None,
        ]
    )
    trainer.train(0, warmup + num_iter)
    return report("train", step_times.times[warmup:], len(batches[0]), warmup)


# -- eval -----------------------------------------------------------------------------------------
@torch.no_grad()
def benchmark_eval(cfg, args, num_iter, warmup):
    model = build_model(cfg).eval()
    weights, key = weights_of(cfg)
    load_weights(model, weights, key=key, allow_random_init=True)
    if not weights:
        logger.warning(
            "Timing a randomly initialised model: the network's speed is a trained one's, its "
            "post-processing may see more or fewer boxes"
        )
    inputs = first_batches(build_test_loader(cfg), min(warmup + num_iter, MAX_CACHED))
    times = []
    for batch in itertools.islice(itertools.cycle(inputs), warmup + num_iter):
        _sync()
        start = time.perf_counter()
        model(batch)
        _sync()
        times.append(time.perf_counter() - start)
    return report("eval", times[warmup:], len(inputs[0]), warmup)


# -- data -----------------------------------------------------------------------------------------
def build_train_loader(cfg):
    if isinstance(cfg, CfgNode):
        return Trainer.build_train_loader(cfg)
    return instantiate(cfg.dataloader.train)


def benchmark_data(cfg, args, num_iter, warmup):
    print("Initial " + ram_msg())
    start = time.perf_counter()
    batches = iter(build_train_loader(cfg))
    images = len(next(batches))
    print(f"data: loader startup (first batch) {time.perf_counter() - start:.2f} s")
    _, times = iter_benchmark(batches, num_iter, warmup, max_time_seconds=float("inf"))
    print("After " + ram_msg())
    return report("data", times, images, warmup)


def data_loader_benchmark(cfg):
    """Detectron2's DataLoaderBenchmark of the config's training data (d2ext's mapper for yaml)."""
    if isinstance(cfg, CfgNode):
        kwargs = build_detection_train_loader.from_config(cfg, mapper=build_train_mapper(cfg))
        kwargs.pop("aspect_ratio_grouping", None)
        return DataLoaderBenchmark(**kwargs)
    train = cfg.dataloader.train
    return DataLoaderBenchmark(
        instantiate(train.dataset),
        mapper=instantiate(train.mapper),
        sampler=instantiate(train.sampler) if "sampler" in train else None,
        total_batch_size=train.total_batch_size,
        num_workers=train.num_workers,
    )


def benchmark_data_advanced(cfg, args, num_iter, warmup):
    benchmark = data_loader_benchmark(cfg)  # each step logs its speed
    benchmark.benchmark_dataset(num_iter, warmup)
    benchmark.benchmark_mapper(num_iter, warmup)
    benchmark.benchmark_workers(num_iter, warmup)
    benchmark.benchmark_IPC(num_iter, warmup)
    return {}


TASKS = {
    "train": benchmark_train,
    "eval": benchmark_eval,
    "data": benchmark_data,
    "data_advanced": benchmark_data_advanced,
}


@command
def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="d2ext")
    setup_logger()  # Detectron2's: the trainer's metrics, the data benchmark's results
    num_iter = DEFAULT_ITERS[args.task] if args.num_iter is None else args.num_iter
    warmup = WARMUP[args.task] if args.warmup is None else args.warmup
    if num_iter < 1 or warmup < 0:
        raise ConfigError(f"--num-iter must be >= 1 and --warmup >= 0, got {num_iter} and {warmup}")
    cfg = setup_cfg(args)
    logger.info(
        f"Benchmark {args.task}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available'}"
    )
    return TASKS[args.task](cfg, args, num_iter, warmup)


if __name__ == "__main__":
    main()
