"""
Stochastic Weight Averaging for every d2ext (or Detectron2) detector: "SWA Object Detection"
(Zhang et al. 2020), after the official code (hyz-xmaster/swa_object_detection, mmdetection 2:
configs/_base_/swa.py, mmdet/core/utils/swa_hook.py, mmdet/apis/train.py).

The recipe, in iterations:

- After the main schedule (``main_iters``), ``num_cycles`` cycles of ``cycle_iters`` iterations
  (the recipe: 12 epochs, one cycle each). In each cycle the learning rate of every parameter
  group goes from ``lr_factor`` x its base LR down to ``min_lr_ratio`` x that, cosine-annealed
  (mmcv's "cyclic" policy with target_ratio=(1, 0.01), step_ratio_up=0.0: iteration k of a cycle
  of C runs at ``end + (start - end) * (1 + cos(pi * k / C)) / 2``), or stays at ``lr_factor`` x
  base LR ("constant"). :class:`SWAParamScheduler`: the main schedule, then that.
- The optimizer state (SGD momentum) is cleared when SWA starts: the recipe builds a new
  optimizer for the SWA epochs (same hyper-parameters as the main one).
- At the end of each cycle the weights are averaged into a running mean (:class:`SWAHook`): the
  recipe's SWAHook averages every parameter (``model.parameters()``, trainable or frozen). Here
  every floating-point entry of the model's ``state_dict`` is averaged, buffers included, as the
  recipe's offline tool (swa/get_swa_model.py) averages whole checkpoints; integer buffers
  (BatchNorm's ``num_batches_tracked``) are the last model's. Normalisation: no BatchNorm
  statistics are recomputed (no ``torch.optim.swa_utils.update_bn``), as in the recipe, whose
  SWAHook.after_run notes that the backbone's BN layers are frozen. For d2ext's detectors (frozen
  BN in the backbone, GroupNorm in FPN and heads) the buffers never change, so averaging them or
  not is the same. A model with trainable BatchNorm gets averaged running statistics, an
  approximation (logged).
- The average is written to ``output_dir/model_swa.pth`` after each cycle, evaluated every
  ``eval_period`` cycles as it stands then (the recipe's SWAHook evaluates it after every SWA
  epoch) and at the end of training, and kept in the trainer's checkpoints (the hook's
  ``state_dict``: the running average and its count), so that resuming in the middle of SWA
  continues the same average.
"""

import copy
import json
import logging
import math
import os

import torch
from detectron2.config import CfgNode
from detectron2.engine import HookBase, hooks
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.solver import LRMultiplier
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from fvcore.common.param_scheduler import ParamScheduler
from fvcore.nn.precise_bn import get_bn_modules
from torch.nn.parallel import DataParallel, DistributedDataParallel

from d2ext.config.swa import SWA_EVAL_PERIOD
from d2ext.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

SWA_FILENAME = "model_swa.pth"
SWA_METRICS_FILENAME = "swa_metrics.json"
LR_SCHEDULES = ("cyclic", "constant")


def swa_settings(cfg):
    """The SWA settings of a yaml (SOLVER.SWA) or lazy (``train.swa``) config, checked, as
    keyword arguments (num_cycles, cycle_iters, lr_factor, lr_schedule, min_lr_ratio,
    reset_optimizer, eval_period); None when SWA is off (or a lazy config has no ``train.swa``).
    A lazy config may leave eval_period out (then SWA_EVAL_PERIOD, the recipe's)."""
    if isinstance(cfg, CfgNode):
        node, prefix = cfg.SOLVER.get("SWA"), "SOLVER.SWA."
        if node is None or not node.ENABLED:
            return None
        get = lambda key: node[key.upper()]  # noqa: E731
    else:
        node, prefix = cfg.train.get("swa"), "train.swa."
        if node is None or not node.get("enabled", False):
            return None
        optional = {"eval_period": SWA_EVAL_PERIOD}
        get = lambda key: node.get(key, optional[key]) if key in optional else node[key]  # noqa: E731
    try:
        settings = {
            k: get(k)
            for k in (
                "num_cycles",
                "cycle_iters",
                "lr_factor",
                "lr_schedule",
                "min_lr_ratio",
                "reset_optimizer",
                "eval_period",
            )
        }
    except KeyError as e:
        raise ConfigError(f"{prefix}{e.args[0]} is missing (see d2ext/config/swa.py)") from None
    key = lambda name: prefix + (name.upper() if prefix.startswith("SOLVER") else name)  # noqa: E731
    for name in ("num_cycles", "cycle_iters"):
        if not isinstance(settings[name], int) or settings[name] < 1:
            raise ConfigError(f"{key(name)}={settings[name]!r}: must be a positive integer")
    if not isinstance(settings["eval_period"], int) or settings["eval_period"] < 0:
        raise ConfigError(
            f"{key('eval_period')}={settings['eval_period']!r}: must be an integer >= 0"
        )
    if not settings["lr_factor"] > 0:
        raise ConfigError(f"{key('lr_factor')}={settings['lr_factor']!r}: must be > 0")
    if not 0 <= settings["min_lr_ratio"] <= 1:
        raise ConfigError(f"{key('min_lr_ratio')}={settings['min_lr_ratio']!r}: must be in [0, 1]")
    if settings["lr_schedule"] not in LR_SCHEDULES:
        raise ConfigError(
            f"{key('lr_schedule')}={settings['lr_schedule']!r}: one of {LR_SCHEDULES}"
        )
    return settings


def swa_iters(settings):
    """Iterations of the SWA phase (0 without SWA)."""
    return settings["num_cycles"] * settings["cycle_iters"] if settings else 0


def swa_lr_multiplier(k, cycle_iters, lr_factor=1.0, min_lr_ratio=0.01, lr_schedule="cyclic"):
    """The LR multiplier of the k-th iteration (0-based) of the SWA phase."""
    if lr_schedule == "constant":
        return lr_factor
    progress = (k % cycle_iters) / cycle_iters
    end = lr_factor * min_lr_ratio
    return end + (lr_factor - end) * (1 + math.cos(math.pi * progress)) / 2


class SWAParamScheduler(ParamScheduler):
    """
    The main schedule for ``main_iters`` iterations, then the SWA cycles: a multiplier of each
    parameter group's base LR over ``main_iters + num_cycles * cycle_iters`` iterations, for
    Detectron2's LRMultiplier / LRScheduler hook with that many iterations. ``main`` is called
    with ``iteration / main_iters``, exactly as an LRMultiplier over ``main_iters`` would.
    """

    def __init__(
        self,
        main,
        main_iters,
        num_cycles,
        cycle_iters,
        lr_factor=1.0,
        min_lr_ratio=0.01,
        lr_schedule="cyclic",
        **unused,
    ):
        self.main = main
        self.main_iters = main_iters
        self.cycle_iters = cycle_iters
        self.total_iters = main_iters + num_cycles * cycle_iters
        self.swa = dict(lr_factor=lr_factor, min_lr_ratio=min_lr_ratio, lr_schedule=lr_schedule)

    def __call__(self, where):
        iteration = round(where * self.total_iters)
        if iteration < self.main_iters:
            return self.main(iteration / self.main_iters)
        return swa_lr_multiplier(iteration - self.main_iters, self.cycle_iters, **self.swa)


def extend_lr_scheduler(scheduler, optimizer, settings):
    """A Detectron2 LRMultiplier (yaml configs' trainer.scheduler) extended by the SWA cycles:
    the same schedule for its max_iter iterations, then the SWA learning rate."""
    if not isinstance(scheduler, LRMultiplier):
        raise ConfigError(
            f"SOLVER.SWA needs Detectron2's LRMultiplier as the LR scheduler, got {type(scheduler).__name__}"
        )
    multiplier = SWAParamScheduler(scheduler._multiplier, scheduler._max_iter, **settings)
    return LRMultiplier(optimizer, multiplier, multiplier.total_iters)


def _unwrap(model):
    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


def insert_swa_hook(hook_list, swa_hook):
    """``hook_list`` with ``swa_hook`` right after the LRScheduler hook (else first): before the
    checkpointer, so that a checkpoint written at the end of a cycle holds that cycle's average,
    and before the evaluation and the writers."""
    index = next((i + 1 for i, h in enumerate(hook_list) if isinstance(h, hooks.LRScheduler)), 0)
    return hook_list[:index] + [swa_hook] + hook_list[index:]


class SWAHook(HookBase):
    """
    Averages the weights at the end of each SWA cycle (see the module's docstring), writes the
    average to ``output_dir/model_swa.pth`` and evaluates it every ``eval_period`` cycles and at
    the end of training with ``eval_function(model)`` (a dict of results, put in the event
    storage as "swa/<key>" at that iteration and as a line of ``output_dir/swa_metrics.json``;
    ``results`` holds the last, ``history`` every evaluation of this process as (number of
    weights averaged, results)).

    Args:
        start_iter: the first iteration of the SWA phase (the main schedule's length).
        cycle_iters, num_cycles: the cycles; an average is taken after iteration
            ``start_iter + k * cycle_iters - 1`` for k = 1 ... num_cycles.
        reset_optimizer: clear the optimizer's state before iteration ``start_iter``.
        eval_period: evaluate the average after every ``eval_period``-th cycle (0: at the end
            of training only).
    The learning rate is the LR scheduler's (:class:`SWAParamScheduler`).
    """

    def __init__(
        self,
        start_iter,
        cycle_iters,
        num_cycles,
        *,
        output_dir=None,
        eval_function=None,
        reset_optimizer=True,
        eval_period=0,
        filename=SWA_FILENAME,
    ):
        self.start_iter = start_iter
        self.cycle_iters = cycle_iters
        self.num_cycles = num_cycles
        self.end_iter = start_iter + cycle_iters * num_cycles
        self.output_dir = output_dir
        self.eval_function = eval_function
        self.reset_optimizer = reset_optimizer
        self.eval_period = eval_period
        self.filename = filename
        self.num_averaged = 0
        self.average = {}  # state_dict key -> running mean (floating-point entries)
        self.results = None
        self.history = []  # (num_averaged, results) of each evaluation

    @classmethod
    def from_settings(cls, settings, main_iters, **kwargs):
        """The hook of :func:`swa_settings`' ``settings`` after ``main_iters`` iterations."""
        return cls(
            main_iters,
            settings["cycle_iters"],
            settings["num_cycles"],
            reset_optimizer=settings["reset_optimizer"],
            eval_period=settings["eval_period"],
            **kwargs,
        )

    @property
    def path(self):
        return os.path.join(self.output_dir, self.filename) if self.output_dir else None

    def cycles_before(self, iteration):
        """How many averages an uninterrupted run has taken before ``iteration`` starts."""
        return min(max(iteration - self.start_iter, 0) // self.cycle_iters, self.num_cycles)

    def before_train(self):
        expected = self.cycles_before(self.trainer.iter)
        if self.num_averaged != expected:
            logger.warning(
                f"SWA: starting at iteration {self.trainer.iter}, where {expected} weights would have "
                f"been averaged, with {self.num_averaged} (the checkpoint has no SWA state of this "
                f"run?): the average differs from an uninterrupted run's"
            )
        if self.trainer.iter < self.end_iter:
            if get_bn_modules(_unwrap(self.trainer.model)):
                logger.info(
                    "SWA: the model has trainable BatchNorm layers; their running statistics are "
                    "averaged like the weights, not recomputed (no update_bn), as in the recipe"
                )

    def before_step(self):
        if self.trainer.iter == self.start_iter:
            logger.info(
                f"SWA: {self.num_cycles} cycles of {self.cycle_iters} iterations from iteration "
                f"{self.start_iter}" + (", optimizer state cleared" if self.reset_optimizer else "")
            )
            if self.reset_optimizer:
                self.trainer.optimizer.state.clear()

    def after_step(self):
        done = self.trainer.iter + 1 - self.start_iter
        if (
            done > 0
            and done % self.cycle_iters == 0
            and done // self.cycle_iters <= self.num_cycles
        ):
            self.update(self.trainer.model)
            logger.info(
                f"SWA: the weights after iteration {self.trainer.iter} averaged in "
                f"({self.num_averaged} of {self.num_cycles})"
            )
            self.save()
            if self.eval_period and self.num_averaged % self.eval_period == 0:
                self.evaluate()

    @torch.no_grad()
    def update(self, model):
        """Adds ``model``'s weights to the running mean."""
        n = self.num_averaged
        for name, value in _unwrap(model).state_dict().items():
            if not value.is_floating_point():
                continue
            if n == 0:
                self.average[name] = value.detach().clone()
            else:
                average = self.average[name]
                average += (value - average) / (n + 1)
        self.num_averaged = n + 1

    def averaged_state_dict(self, model=None):
        """The model's state_dict with the average in place of its floating-point entries."""
        state = _unwrap(model if model is not None else self.trainer.model).state_dict()
        return {
            k: (self.average[k] if k in self.average else v).detach().clone()
            for k, v in state.items()
        }

    def averaged_model(self):
        """A copy of the trained model with the averaged weights, in eval mode."""
        model = copy.deepcopy(_unwrap(self.trainer.model))
        model.load_state_dict(self.averaged_state_dict())
        return model.eval()

    def save(self):
        if not self.path or not comm.is_main_process():
            return
        state = {k: v.cpu() for k, v in self.averaged_state_dict().items()}
        PathManager.mkdirs(self.output_dir)
        with PathManager.open(self.path, "wb") as f:
            torch.save(
                {
                    "model": state,
                    "swa_num_averaged": self.num_averaged,
                    "iteration": self.trainer.iter,
                },
                f,
            )
        logger.info(f"SWA: the average of {self.num_averaged} saved to {self.path}")

    def evaluate(self):
        """Evaluates the average as it stands with eval_function; its results go to the event
        storage at the current iteration, ``results`` and ``history``."""
        if self.eval_function is None:
            return
        logger.info(f"SWA: evaluating the average of {self.num_averaged} cycle-end weights")
        model = self.averaged_model()
        self.results = self.eval_function(model)
        del model
        self.history.append((self.num_averaged, self.results))
        if self.results:
            flat = {f"swa/{k}": float(v) for k, v in flatten_results_dict(self.results).items()}
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
            self._log_results(flat)
        comm.synchronize()

    def _log_results(self, flat):
        """One line of output_dir/swa_metrics.json per evaluation: metrics.json keeps only what
        its writer finds at its period, which a cycle's end need not meet."""
        if not self.output_dir or not comm.is_main_process():
            return
        line = {"iteration": self.trainer.iter, "num_averaged": self.num_averaged, **flat}
        with PathManager.open(os.path.join(self.output_dir, SWA_METRICS_FILENAME), "a") as f:
            f.write(json.dumps(line) + "\n")

    def after_train(self):
        # As EvalHook: not after a failed training.
        finished = self.trainer.iter + 1 >= self.trainer.max_iter
        evaluated = bool(self.history) and self.history[-1][0] == self.num_averaged
        if finished and self.num_averaged and not evaluated:
            self.evaluate()
        self.eval_function = None  # often holds the trainer

    def state_dict(self):
        if not self.num_averaged:
            return {}
        return {"num_averaged": self.num_averaged, "average": dict(self.average)}

    def load_state_dict(self, state_dict):
        try:
            num_averaged, average = int(state_dict["num_averaged"]), dict(state_dict["average"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"the checkpoint's SWA state is invalid: {type(e).__name__}: {e}"
            ) from None
        state = _unwrap(self.trainer.model).state_dict()
        expected = {k for k, v in state.items() if v.is_floating_point()}
        if set(average) != expected:
            missing, unexpected = sorted(expected - set(average)), sorted(set(average) - expected)
            raise CheckpointError(
                f"the checkpoint's SWA average does not match the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        for k, v in average.items():
            if not isinstance(v, torch.Tensor) or v.shape != state[k].shape:
                raise CheckpointError(
                    f"the checkpoint's SWA average of {k} does not match the model"
                )
        self.average = {
            k: v.to(device=state[k].device, dtype=state[k].dtype) for k, v in average.items()
        }
        self.num_averaged = num_averaged
        logger.info(f"SWA: resumed the average of {num_averaged} cycle-end weights")
