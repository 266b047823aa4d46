"""Training-step time and memory of detectors, measured as tools/benchmark_models.py does: every
model trains on the same fixed batch, the models take turns (round-robin) so that a change of
machine load hits all of them alike, and the median step time of each is compared.

A step is forward + backward + SGD update, as in Detectron2's SimpleTrainer, without data loading.
Peak memory: on CUDA torch.cuda.max_memory_allocated over steps; on the CPU the RSS high-water
mark of a training step in a fresh process that built only that model (`python -m
d2ext.compare.benchmark`), so that other models' memory is not in it.
"""

import json
import statistics
import sys
import time
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from d2ext.config import load_config
from d2ext.data import build_train_mapper

from .plan import is_lazy


def train_dataset(cfg) -> str:
    if hasattr(cfg, "DATASETS"):
        return cfg.DATASETS.TRAIN[0]
    names = cfg.dataloader.train.dataset.names
    return names if isinstance(names, str) else names[0]


def fixed_batch(cfg, size: int):
    """`size` training images of the config's first training set through its training mapper,
    mapped once (fixed seed) and reused for every step of every model."""
    np.random.seed(0)
    mapper = (
        build_train_mapper(cfg)
        if hasattr(cfg, "MODEL")
        else instantiate(cfg.dataloader.train.mapper)
    )
    records = DatasetCatalog.get(train_dataset(cfg))[:size]
    return [mapper(dict(record)) for record in records]


class Runner:
    """One model and its optimizer, built from a yaml or lazy config (with overrides)."""

    def __init__(
        self,
        path: str,
        batch,
        opts: Sequence[str] = (),
        device: str = "cpu",
        name: Optional[str] = None,
    ):
        cfg = load_config(path, opts)
        torch.manual_seed(0)
        if is_lazy(path):
            self.model = instantiate(cfg.model).to(device).train()
            cfg.optimizer.params.model = self.model
            self.optimizer = instantiate(cfg.optimizer)
        else:
            cfg.MODEL.DEVICE = device
            self.model = build_model(cfg).train()
            self.optimizer = build_optimizer(cfg, self.model)
        self.name = name or path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        self.device = device
        self.batch = batch
        self.times: List[float] = []
        self.peak_bytes = 0
        self.storage = EventStorage()

    def _sync(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def step(self) -> float:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        self._sync()
        start = time.perf_counter()
        with self.storage:
            losses = self.model(self.batch)
            self.optimizer.zero_grad()
            sum(losses.values()).backward()
            self.optimizer.step()
            self.storage.iter += 1
        self._sync()
        if self.device.startswith("cuda"):
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated())
        return time.perf_counter() - start

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def interleave(
    runners: Sequence[Runner], rounds: int, steps: int, on_step: Optional[Callable] = None
):
    """One warm-up step each, then `rounds` rounds in which every model takes `steps` timed steps."""
    for runner in runners:
        runner.step()
        on_step and on_step()
    for _ in range(rounds):
        for runner in runners:
            for _ in range(steps):
                runner.times.append(runner.step())
                on_step and on_step()
    return runners


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def cpu_step_memory(path: str, opts: Sequence[str], batch_size: int) -> dict:
    """In this (fresh) process: the RSS high-water mark (VmHWM) of one training step after a
    warm-up step (which allocates the optimizer state), and the RSS before it. The peak includes
    the interpreter, torch and the model. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork + exec, so a child would report its parent's peak."""
    cfg = load_config(path, opts)
    runner = Runner(path, fixed_batch(cfg, batch_size), opts)
    runner.step()
    before = _status_kib("VmRSS")
    try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    runner.step()
    peak = _status_kib("VmHWM")
    return {
        "rss_before_step_mib": before / 1024,
        "peak_rss_mib": peak / 1024,
        "step_increase_mib": max(peak - before, 0) / 1024,
        "peak_reset_before_step": reset,
    }


if __name__ == "__main__":
    # python -m d2ext.compare.benchmark CONFIG BATCH '<json overrides>' '<json datasets>': prints
    # cpu_step_memory as json (datasets: what the parent registered, d2ext.data.registration).
    import d2ext  # noqa: F401  (registers the models and the bundled dataset)
    from d2ext.data.registration import register_datasets

    register_datasets(**json.loads(sys.argv[4]))
    print(json.dumps(cpu_step_memory(sys.argv[1], json.loads(sys.argv[3]), int(sys.argv[2]))))
