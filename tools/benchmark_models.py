#!/usr/bin/env python
"""
Training-step time of d2ext's models relative to a baseline model (ATSS by default), all
measured in the same run: each model trains on the same fixed batch of synthetic images, the
models take turns (round-robin) so that a change of machine load hits all of them alike, and the
median step time of each is printed with its ratio to the baseline's (d2ext.compare.benchmark,
which tools/compare_methods.py uses too).

    python tools/benchmark_models.py                       # the tiny ATSS-family configs
    python tools/benchmark_models.py --rounds 10 --steps 3
    python tools/benchmark_models.py --configs configs/Synthetic/atss_R_18_FPN_tiny.yaml \
        configs/Synthetic/gfl_R_18_FPN_tiny.yaml configs/Synthetic/fcos_R_18_FPN_tiny.py

A step is forward + backward + SGD update, as in Detectron2's SimpleTrainer, without data loading.
"""

import d2ext  # noqa: F401  first: sets the process environment before torch loads (d2ext/environment.py)

# isort: split
import argparse
import os

import torch

from d2ext.compare.benchmark import Runner, fixed_batch, interleave
from d2ext.config import load_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = [
    os.path.join(REPO_ROOT, "configs", "Synthetic", f"{name}_R_18_FPN_tiny.yaml")
    for name in ("atss", "gfl", "gflv2", "dynamic_atss")
]


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs", nargs="+", default=DEFAULT_CONFIGS, help="the first one is the baseline"
    )
    parser.add_argument("--rounds", type=int, default=6, help="round-robin rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model and round")
    parser.add_argument(
        "--batch", type=int, default=8, help="images per step (the tiny configs': 8)"
    )
    return parser.parse_args()


def main():
    args = parse_args()
    batch = fixed_batch(load_config(args.configs[0]), args.batch)
    runners = interleave([Runner(path, batch) for path in args.configs], args.rounds, args.steps)
    base = runners[0].median
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.rounds} rounds x {args.steps} steps per model"
    )
    print(f"| model | step s (median) | vs {runners[0].name} |")
    print("|---|---:|---:|")
    for runner in runners:
        print(f"| {runner.name} | {runner.median:.3f} | {runner.median / base:.2f}x |")


if __name__ == "__main__":
    main()
