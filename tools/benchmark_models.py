#!/usr/bin/env python
"""
Training-step time of d2ext's models relative to a baseline model (ATSS by default), all
measured in the same run: each model trains on the same fixed batch of synthetic images, the
models take turns (round-robin) so that a change of machine load hits all of them alike, and the
median step time of each is printed with its ratio to the baseline's.

    python tools/benchmark_models.py                       # the tiny ATSS-family configs
    python tools/benchmark_models.py --rounds 10 --steps 3
    python tools/benchmark_models.py --configs configs/Synthetic/atss_R_18_FPN_tiny.yaml \
        configs/Synthetic/gfl_R_18_FPN_tiny.yaml

A step is forward + backward + SGD update, as in Detectron2's SimpleTrainer, without data loading.
"""
import os

# Before torch loads: idle OpenMP threads sleep instead of spin-waiting, which on a shared CPU
# made a step ~5x slower (README "Threads"). An explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import time

import numpy as np
import torch

import d2ext  # noqa: F401  (registers the models)
from d2ext.config import get_cfg, merge_from_file
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = [
    os.path.join(REPO_ROOT, "configs", "Synthetic", f"{name}_R_18_FPN_tiny.yaml")
    for name in ("atss", "gfl", "gflv2", "dynamic_atss")
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="the first one is the baseline")
    parser.add_argument("--rounds", type=int, default=6, help="round-robin rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model and round")
    parser.add_argument("--batch", type=int, default=8, help="images per step (the tiny configs': 8)")
    return parser.parse_args()


def fixed_batch(cfg, size):
    """`size` training images of the config's first training set through its training mapper,
    mapped once (fixed seed) and reused for every step of every model."""
    np.random.seed(0)
    mapper = DatasetMapper(cfg, is_train=True)
    records = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:size]
    return [mapper(dict(record)) for record in records]


class Runner:
    def __init__(self, path, batch):
        cfg = get_cfg()
        merge_from_file(cfg, path)
        cfg.MODEL.DEVICE = "cpu"
        torch.manual_seed(0)
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.model = build_model(cfg).train()
        self.optimizer = build_optimizer(cfg, self.model)
        self.batch = batch
        self.times = []
        self.storage = EventStorage()

    def step(self):
        start = time.perf_counter()
        with self.storage:
            losses = self.model(self.batch)
            self.optimizer.zero_grad()
            sum(losses.values()).backward()
            self.optimizer.step()
            self.storage.iter += 1
        return time.perf_counter() - start


def main():
    args = parse_args()
    cfg = get_cfg()
    merge_from_file(cfg, args.configs[0])
    batch = fixed_batch(cfg, args.batch)
    runners = [Runner(path, batch) for path in args.configs]
    for runner in runners:  # warm-up
        runner.step()
    for _ in range(args.rounds):
        for runner in runners:
            runner.times += [runner.step() for _ in range(args.steps)]

    base = statistics.median(runners[0].times)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.rounds} rounds x {args.steps} steps per model")
    print(f"| model | step s (median) | vs {runners[0].name} |")
    print("|---|---:|---:|")
    for runner in runners:
        median = statistics.median(runner.times)
        print(f"| {runner.name} | {median:.3f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
