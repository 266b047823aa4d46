"""What tools/compare_methods.py runs: configs x seeds, each with the command-line overrides that
put every method on one schedule and one dataset.

Overrides are plain config options (yaml "KEY VALUE" pairs, lazy "key=value" strings) passed to
d2ext.tools.train_net, so a run is exactly what `d2ext-train --config-file C <opts>` trains, and the
step-time benchmark loads each config with the same options.
"""

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog

from d2ext.config import (
    load_config,
    num_classes_key,
    score_thresh_key,
    set_num_classes,
    set_score_thresh,
)
from d2ext.data.registration import thing_classes
from d2ext.errors import DataError
from d2ext.model_zoo.model_zoo import CONFIG_ROOT

SYNTHETIC = os.path.join(
    CONFIG_ROOT, "Synthetic"
)  # d2ext's shipped configs (installed or a checkout)
REFERENCE = "atss_R_18_FPN_tiny"  # the first config: the reference of the ratio columns
# A line in a tiny config that keeps it out of the default comparison.
NOT_BY_DEFAULT = "# compare_methods: not by default"


def default_configs(folder: str = SYNTHETIC) -> List[str]:
    """Every tiny config of ``folder`` (``*_tiny.yaml``, or ``*_tiny.py`` where it has no yaml
    twin): the methods and the baselines (Detectron2's RetinaNet, FCOS, Faster R-CNN), ATSS first,
    then by name. A config with the line ``# compare_methods: not by default`` is left out (and
    still runs when named with --configs)."""
    names = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[0].endswith("_tiny"))
    configs = []
    for f in names:
        stem, ext = os.path.splitext(f)
        if ext == ".py" and stem + ".yaml" in names or ext not in (".yaml", ".py"):
            continue
        with open(os.path.join(folder, f)) as text:
            if any(line.startswith(NOT_BY_DEFAULT) for line in text):
                continue
        configs.append(f)
    return sorted(configs, key=lambda f: (os.path.splitext(f)[0] != REFERENCE, f))


DEFAULT_CONFIGS = default_configs()
DEFAULT_TRAIN, DEFAULT_TEST = "d2ext_shapes_train", "d2ext_shapes_val"
DEFAULT_SEED = 42  # the tiny configs' own seed: seed index 0 reproduces their single runs


@dataclass
class Run:
    config: str  # absolute path
    name: str  # config file name without extension: the method's row in the report
    seed: int
    output_dir: str
    opts: List[str]  # train_net.py overrides (yaml: KEY VALUE ...; lazy: key=value ...)
    max_iter: int

    @property
    def result_file(self):
        return os.path.join(self.output_dir, "result.json")

    @property
    def finished(self):
        return os.path.isfile(self.result_file)


@dataclass
class Plan:
    runs: List[Run]
    configs: List[str]
    names: List[str]
    seeds: List[int]
    out: str
    max_iter: int
    eval_period: int
    train_dataset: str
    test_dataset: str
    num_classes: int
    score_thresh: Optional[float]
    cores: int
    device: str
    # name -> the overrides shared by its seeds (all but SEED / OUTPUT_DIR).
    config_opts: Dict[str, List[str]] = field(default_factory=dict)

    def settings(self) -> dict:
        return {
            "configs": [
                os.path.relpath(c, CONFIG_ROOT) if c.startswith(SYNTHETIC) else c
                for c in self.configs
            ],
            "seeds": self.seeds,
            "max_iter": self.max_iter,
            "eval_period": self.eval_period,
            "train_dataset": self.train_dataset,
            "test_dataset": self.test_dataset,
            "num_classes": self.num_classes,
            "score_thresh": self.score_thresh,
            "cores": self.cores,
            "device": self.device,
        }


def is_lazy(path: str) -> bool:
    return path.endswith(".py")


def resolve_configs(configs: Sequence[str]) -> List[str]:
    """Paths of the given configs; a bare name (with or without extension) is looked up in
    configs/Synthetic/. Raises FileNotFoundError naming every config that is not found."""
    paths, missing = [], []
    for c in configs:
        candidates = [c] if os.path.splitext(c)[1] in (".yaml", ".py") else [c + ".yaml", c + ".py"]
        candidates += [os.path.join(SYNTHETIC, x) for x in candidates]
        found = next((x for x in candidates if os.path.isfile(x)), None)
        if found is None:
            missing.append(c)
        else:
            paths.append(os.path.abspath(found))
    if missing:
        raise FileNotFoundError(
            f"unknown config(s): {', '.join(missing)} (give a .yaml or .py file, or a name in {SYNTHETIC})"
        )
    return paths


def check_datasets(*names: str):
    registered = set(DatasetCatalog.list())
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise DataError(
            f"dataset(s) not registered: {', '.join(unknown)}. Register your own with --coco-dataset "
            "NAME JSON IMAGE_ROOT, --voc-dataset NAME DIR SPLIT or --import a module that registers it"
        )


def _scaled(values, max_iter, own_max_iter):
    """Milestones scaled from a config's own schedule to `max_iter`, as integers in (0, max_iter)
    and strictly increasing (milestones that collapse at a very short schedule are dropped)."""
    out = []
    for v in values:
        s = int(round(v * max_iter / own_max_iter))
        if 0 < s < max_iter and (not out or s > out[-1]):
            out.append(s)
    return out


def _kv(lazy, key, value):
    """One override in the syntax of the config's kind."""
    if lazy:
        return [f"{key}={json.dumps(value) if isinstance(value, (list, str)) else value}"]
    if isinstance(value, (list, tuple)):
        value = "(" + "".join(f"{json.dumps(v)}," for v in value) + ")"
    return [key, str(value)]


def schedule_overrides(cfg, lazy: bool, max_iter: int, eval_period: int) -> List[str]:
    """The config's own schedule stretched to `max_iter`: LR steps and warmup scaled by
    max_iter / own MAX_ITER, a checkpoint only at the end, evaluation every `eval_period`."""
    if lazy:
        own = int(cfg.train.max_iter)
        sched = getattr(cfg.lr_multiplier, "scheduler", None)
        if sched is None or "milestones" not in sched:
            raise ValueError(
                "lazy config's lr_multiplier.scheduler has no milestones: cannot rescale it"
            )
        milestones = _scaled(list(sched.milestones), max_iter, own)
        opts = _kv(True, "train.max_iter", max_iter)
        opts += _kv(True, "lr_multiplier.scheduler.num_updates", max_iter)
        opts += _kv(True, "lr_multiplier.scheduler.milestones", milestones)
        # fvcore wants one value per interval: drop the decays of dropped milestones.
        opts += _kv(
            True, "lr_multiplier.scheduler.values", list(sched["values"])[: len(milestones) + 1]
        )
        # (warmup_length is a fraction of the schedule: it scales by itself.)
        opts += _kv(True, "train.checkpointer.period", max_iter)
        opts += _kv(True, "train.eval_period", eval_period)
        return opts
    own = cfg.SOLVER.MAX_ITER
    opts = _kv(False, "SOLVER.MAX_ITER", max_iter)
    opts += _kv(False, "SOLVER.STEPS", _scaled(cfg.SOLVER.STEPS, max_iter, own))
    opts += _kv(False, "SOLVER.WARMUP_ITERS", int(round(cfg.SOLVER.WARMUP_ITERS * max_iter / own)))
    opts += _kv(False, "SOLVER.CHECKPOINT_PERIOD", max_iter)
    opts += _kv(False, "TEST.EVAL_PERIOD", eval_period)
    return opts


def method_overrides(cfg, lazy: bool, num_classes: int, score_thresh: Optional[float]) -> List[str]:
    """Class count (and test score threshold) at the key this config's method reads them from,
    set through d2ext.config.set_num_classes / set_score_thresh (which validate them)."""
    set_num_classes(cfg, num_classes)
    opts = _kv(lazy, num_classes_key(cfg), num_classes)
    if score_thresh is not None:
        set_score_thresh(cfg, score_thresh)
        opts += _kv(lazy, score_thresh_key(cfg), float(score_thresh))
    return opts


def dataset_overrides(lazy: bool, train: str, test: str, workers: int, cfg) -> List[str]:
    if lazy:
        # The evaluator's dataset_name interpolates dataloader.test.dataset.names.
        opts = _kv(True, "dataloader.train.dataset.names", train)
        opts += _kv(True, "dataloader.test.dataset.names", test)
        opts += _kv(
            True, "dataloader.train.num_workers", min(workers, cfg.dataloader.train.num_workers)
        )
        opts += _kv(
            True, "dataloader.test.num_workers", min(workers, cfg.dataloader.test.num_workers)
        )
        return opts
    opts = _kv(False, "DATASETS.TRAIN", [train]) + _kv(False, "DATASETS.TEST", [test])
    return opts + _kv(False, "DATALOADER.NUM_WORKERS", min(workers, cfg.DATALOADER.NUM_WORKERS))


def make_plan(
    configs: Sequence[str] = DEFAULT_CONFIGS,
    *,
    seeds: int = 3,
    out: str = "output/compare",
    max_iter: int = 500,
    eval_points: int = 5,
    train_dataset: str = DEFAULT_TRAIN,
    test_dataset: str = DEFAULT_TEST,
    num_classes: Optional[int] = None,
    score_thresh: Optional[float] = None,
    cores: int = 2,
    device: str = "cpu",
    first_seed: int = DEFAULT_SEED,
    jobs: int = 1,
) -> Plan:
    """Every config x `seeds` seeds (first_seed, first_seed + 1, ...), each trained for
    `max_iter` iterations in <out>/runs/<config name>/seed<seed>/ and evaluated `eval_points`
    times (0: at the end only). `jobs` runs train at once, each with at most cores // jobs
    data-loading workers."""
    if seeds < 1 or max_iter < 1:
        raise ValueError(f"--seeds and --max-iter must be >= 1, got {seeds} and {max_iter}")
    paths = resolve_configs(configs)
    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"configs with the same name would share an output folder: {dup}")
    check_datasets(train_dataset, test_dataset)
    if num_classes is None:
        num_classes = len(thing_classes(train_dataset))
    eval_period = max_iter // eval_points if eval_points > 0 else 0
    seed_values = [first_seed + i for i in range(seeds)]
    out = os.path.abspath(out)
    plan = Plan(
        runs=[],
        configs=paths,
        names=names,
        seeds=seed_values,
        out=out,
        max_iter=max_iter,
        eval_period=eval_period,
        train_dataset=train_dataset,
        test_dataset=test_dataset,
        num_classes=num_classes,
        score_thresh=score_thresh,
        cores=cores,
        device=device,
    )
    for path, name in zip(paths, names):
        lazy = is_lazy(path)
        cfg = load_config(path)
        opts = schedule_overrides(cfg, lazy, max_iter, eval_period)
        # Data-loading workers: at most the cores of one run (--cores / --jobs).
        workers = max(1, cores // jobs)
        opts += dataset_overrides(lazy, train_dataset, test_dataset, workers, cfg)
        opts += method_overrides(cfg, lazy, num_classes, score_thresh)
        opts += _kv(lazy, "train.device" if lazy else "MODEL.DEVICE", device)
        plan.config_opts[name] = opts
    # Seed by seed (every config's first seed, then every config's second, ...): a comparison
    # stopped midway has every method in its report.
    for seed in seed_values:
        for path, name in zip(paths, names):
            lazy = is_lazy(path)
            run_dir = os.path.join(out, "runs", name, f"seed{seed}")
            run_opts = plan.config_opts[name] + _kv(lazy, "train.seed" if lazy else "SEED", seed)
            run_opts += _kv(lazy, "train.output_dir" if lazy else "OUTPUT_DIR", run_dir)
            plan.runs.append(Run(path, name, seed, run_dir, run_opts, max_iter))
    return plan
