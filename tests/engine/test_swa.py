"""SWA (d2ext/engine/swa.py, SOLVER.SWA / train.swa): on a toy model with Detectron2's
SimpleTrainer, the average is the mean of the cycle-end weights, the learning rate follows the
main schedule then the cyclic one, the optimizer state is cleared when SWA starts, and resuming
in the middle of SWA gives the uninterrupted run's average bit for bit; then tools/train_net.py
end to end on the tiny VFNet SWA config (yaml) and a lazy config."""

import itertools
import json
import math
import os
import shutil

import pytest
import torch
from conftest import CONFIGS
from detectron2.config import LazyConfig
from detectron2.engine import HookBase, SimpleTrainer, hooks
from detectron2.solver import WarmupParamScheduler
from engine.test_train_net import run
from fvcore.common.param_scheduler import MultiStepParamScheduler
from torch import nn

from d2ext.checkpoint import Checkpointer, load_weights
from d2ext.config import get_cfg
from d2ext.engine.swa import (
    SWA_FILENAME,
    SWAHook,
    SWAParamScheduler,
    insert_swa_hook,
    swa_iters,
    swa_settings,
)
from d2ext.errors import CheckpointError, ConfigError

MAIN_ITERS = 8
SETTINGS = dict(
    num_cycles=3,
    cycle_iters=4,
    lr_factor=0.5,
    lr_schedule="cyclic",
    min_lr_ratio=0.01,
    reset_optimizer=True,
)
TOTAL = MAIN_ITERS + swa_iters(SETTINGS)
BASE_LRS = (0.1, 0.2)  # weights, biases (x2 as the ATSS-family recipes)


class Toy(nn.Module):
    """Linear -> BatchNorm (trainable: its running statistics change) -> Linear."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.head = nn.Linear(3, 1)

    def forward(self, batch):
        x, y = batch
        return {"loss": ((self.head(self.bn(self.linear(x))) - y) ** 2).mean()}


def main_schedule():
    return WarmupParamScheduler(
        MultiStepParamScheduler([1.0, 0.1], milestones=[6], num_updates=MAIN_ITERS),
        0.1,
        2 / MAIN_ITERS,
    )


class Recorder(HookBase):
    """Each iteration's learning rates and optimizer state size (before the step), and the
    weights at the end of each SWA cycle."""

    def __init__(self):
        self.lrs, self.state_sizes, self.cycle_ends = {}, {}, []

    def before_step(self):
        self.lrs[self.trainer.iter] = [g["lr"] for g in self.trainer.optimizer.param_groups]
        self.state_sizes[self.trainer.iter] = len(self.trainer.optimizer.state)

    def after_step(self):
        done = self.trainer.iter + 1 - MAIN_ITERS
        if done > 0 and done % SETTINGS["cycle_iters"] == 0:
            self.cycle_ends.append(
                {k: v.clone() for k, v in self.trainer.model.state_dict().items()}
            )


def build(out_dir, seed=0, eval_period=0):
    """A toy trainer with the SWA hook, a checkpoint after every iteration (d2ext's
    Checkpointer, the trainer's state included, as tools/train_net.py)."""
    torch.manual_seed(seed)
    model = Toy()
    weights = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    optimizer = torch.optim.SGD(
        [
            {"params": weights, "lr": BASE_LRS[0], "weight_decay": 1e-4},
            {"params": biases, "lr": BASE_LRS[1], "weight_decay": 0.0},
        ],
        lr=BASE_LRS[0],
        momentum=0.9,
    )
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g))
    trainer = SimpleTrainer(model, itertools.repeat(batch), optimizer)
    checkpointer = Checkpointer(model, str(out_dir), trainer=trainer)
    swa = SWAHook.from_settings(
        {**SETTINGS, "eval_period": eval_period},
        MAIN_ITERS,
        output_dir=str(out_dir),
        eval_function=lambda m: {"toy": {"head_weight_sum": float(m.head.weight.detach().sum())}},
    )
    recorder = Recorder()
    hook_list = [
        hooks.LRScheduler(scheduler=SWAParamScheduler(main_schedule(), MAIN_ITERS, **SETTINGS)),
        hooks.PeriodicCheckpointer(checkpointer, period=1),
        recorder,
    ]
    trainer.register_hooks(insert_swa_hook(hook_list, swa))
    return trainer, checkpointer, swa, recorder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("swa_full")
    trainer, _, swa, recorder = build(out)
    trainer.train(0, TOTAL)
    return out, trainer, swa, recorder


def test_average_is_the_mean_of_the_cycle_end_weights(uninterrupted):
    out, trainer, swa, recorder = uninterrupted
    assert swa.num_averaged == len(recorder.cycle_ends) == SETTINGS["num_cycles"]
    averaged = swa.averaged_state_dict()
    final = trainer.model.state_dict()
    assert averaged.keys() == final.keys()
    for key, value in averaged.items():
        if value.is_floating_point():  # parameters and BatchNorm's running statistics
            mean = torch.stack([state[key] for state in recorder.cycle_ends]).mean(0)
            torch.testing.assert_close(value, mean, rtol=0, atol=1e-6)
            assert not torch.equal(value, final[key]), key  # the average, not the last weights
        else:  # num_batches_tracked: the last model's
            assert torch.equal(value, final[key]), key
    # model_swa.pth holds the average and loads into a new model through d2ext's loader.
    saved = torch.load(os.path.join(out, SWA_FILENAME), weights_only=True)
    assert saved["swa_num_averaged"] == 3 and saved["iteration"] == TOTAL - 1
    model = load_weights(Toy(), os.path.join(out, SWA_FILENAME))
    for key, value in model.state_dict().items():
        assert torch.equal(value, averaged[key]), key
    # Evaluated at the end: the averaged model's results, in the storage as "swa/...".
    expected = float(averaged["head.weight"].sum())
    assert swa.results == {"toy": {"head_weight_sum": expected}}
    assert trainer.storage.latest()["swa/toy/head_weight_sum"][0] == expected


def head_sum(state):
    return float(state["head.weight"].sum())


@pytest.mark.parametrize("eval_period,evaluated_after", [(0, [3]), (1, [1, 2, 3]), (2, [2, 3])])
def test_the_average_is_evaluated_every_eval_period_cycles_and_at_the_end(
    tmp_path, eval_period, evaluated_after
):
    trainer, _, swa, recorder = build(tmp_path, eval_period=eval_period)
    logged = []
    writer = HookBase()
    writer.after_step = lambda: logged.extend(
        (trainer.iter, v[0])
        for k, v in trainer.storage.latest().items()
        if k == "swa/toy/head_weight_sum" and v[1] == trainer.iter
    )
    trainer.register_hooks([writer])
    trainer.train(0, TOTAL)
    assert [n for n, _ in swa.history] == evaluated_after
    for n, results in swa.history:  # the average as it stood after n cycles
        mean = torch.stack([state["head.weight"] for state in recorder.cycle_ends[:n]]).mean(0)
        assert results["toy"]["head_weight_sum"] == pytest.approx(float(mean.sum()), abs=1e-5)
    # Each in the storage at the iteration that ended its cycle.
    cycle_end = lambda n: MAIN_ITERS + n * SETTINGS["cycle_iters"] - 1  # noqa: E731
    assert logged == [
        (cycle_end(n), r["toy"]["head_weight_sum"])
        for n, r in swa.history
        if eval_period and n % eval_period == 0
    ]
    lines = [json.loads(line) for line in open(tmp_path / "swa_metrics.json")]
    assert [(m["num_averaged"], m["swa/toy/head_weight_sum"]) for m in lines] == [
        (n, r["toy"]["head_weight_sum"]) for n, r in swa.history
    ]


def test_learning_rate_main_schedule_then_cyclic(uninterrupted):
    _, _, _, recorder = uninterrupted
    main = main_schedule()
    assert sorted(recorder.lrs) == list(range(TOTAL))
    for it, lrs in recorder.lrs.items():
        for base, lr in zip(BASE_LRS, lrs):
            if it < MAIN_ITERS:  # the main schedule, as an LRMultiplier over MAIN_ITERS would
                assert lr == pytest.approx(base * main(it / MAIN_ITERS), rel=1e-12)
                continue
            k = (it - MAIN_ITERS) % SETTINGS["cycle_iters"]
            start, end = base * 0.5, base * 0.5 * 0.01  # lr_factor, min_lr_ratio
            # cosine from `start` down towards `end` within each cycle (mmcv's "cyclic" policy)
            expected = {
                0: start,
                1: end + (start - end) * (1 + math.sqrt(0.5)) / 2,
                2: (start + end) / 2,
                3: end + (start - end) * (1 - math.sqrt(0.5)) / 2,
            }[k]
            assert lr == pytest.approx(expected, rel=1e-12), (it, lr)
    constant = SWAParamScheduler(main, MAIN_ITERS, **{**SETTINGS, "lr_schedule": "constant"})
    assert all(constant((MAIN_ITERS + k) / TOTAL) == 0.5 for k in range(swa_iters(SETTINGS) + 1))


def test_optimizer_state_cleared_when_swa_starts(uninterrupted):
    _, _, _, recorder = uninterrupted
    assert recorder.state_sizes[MAIN_ITERS - 1] > 0  # momentum buffers of the main schedule
    assert recorder.state_sizes[MAIN_ITERS] == 0  # a new optimizer, as the recipe
    assert recorder.state_sizes[MAIN_ITERS + 1] > 0


# Resume after the last iteration of the main schedule, in the middle of the 2nd cycle, and at
# the end of the 2nd cycle (the checkpoint written with that cycle's average).
@pytest.mark.parametrize("last_done", [MAIN_ITERS - 1, MAIN_ITERS + 5, MAIN_ITERS + 7])
def test_resume_in_the_middle_of_swa_gives_the_same_average(uninterrupted, tmp_path, last_done):
    full_out, full_trainer, full_swa, _ = uninterrupted
    name = f"model_{last_done:07d}.pth"
    shutil.copy(os.path.join(full_out, name), tmp_path / name)
    (tmp_path / "last_checkpoint").write_text(name)
    trainer, checkpointer, swa, recorder = build(tmp_path, seed=123)  # other initial weights
    checkpointer.resume_or_load("", resume=True)
    assert trainer.iter == last_done
    assert swa.num_averaged == swa.cycles_before(last_done + 1)
    trainer.train(trainer.iter + 1, TOTAL)
    assert swa.num_averaged == full_swa.num_averaged
    for key, value in full_swa.average.items():
        assert torch.equal(swa.average[key], value), key
    for key, value in full_trainer.model.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[key], value), key
    saved = torch.load(tmp_path / SWA_FILENAME, weights_only=True)["model"]
    for key, value in torch.load(os.path.join(full_out, SWA_FILENAME), weights_only=True)[
        "model"
    ].items():
        assert torch.equal(saved[key], value), key
    # The resumed run's later checkpoints hold the average too.
    assert (
        "SWAHook" in torch.load(tmp_path / "model_final.pth", weights_only=True)["trainer"]["hooks"]
    )


def test_checkpoint_with_a_foreign_average_is_refused(tmp_path):
    trainer, _, swa, _ = build(tmp_path)
    with pytest.raises(CheckpointError, match="does not match the model"):
        swa.load_state_dict({"num_averaged": 1, "average": {"linear.weight": torch.zeros(3, 4)}})
    assert swa.num_averaged == 0


def test_settings_and_configs():
    cfg = get_cfg()
    assert swa_settings(cfg) is None  # off by default
    cfg.merge_from_file(os.path.join(CONFIGS, "VFNet", "vfnet_R_50_FPN_1x_swa.yaml"))
    lazy = LazyConfig.load(os.path.join(CONFIGS, "VFNet", "vfnet_R_50_FPN_1x_swa.py"))
    # The recipe: 12 epochs of COCO at batch 16, cosine cycles from the main LR to 1/100 of it.
    expected = dict(
        num_cycles=12,
        cycle_iters=7330,
        lr_factor=1.0,
        lr_schedule="cyclic",
        min_lr_ratio=0.01,
        reset_optimizer=True,
        eval_period=1,
    )
    assert swa_settings(cfg) == swa_settings(lazy) == expected
    assert cfg.SOLVER.MAX_ITER == lazy.train.max_iter == 90000
    assert cfg.TEST.EVAL_PERIOD == lazy.train.eval_period == 90000
    cfg.SOLVER.SWA.LR_SCHEDULE = "linear"
    with pytest.raises(ConfigError, match="SOLVER.SWA.LR_SCHEDULE='linear'"):
        swa_settings(cfg)
    lazy.train.swa.eval_period = -1
    with pytest.raises(ConfigError, match="train.swa.eval_period=-1: must be an integer >= 0"):
        swa_settings(lazy)
    lazy.train.swa.cycle_iters = 0
    with pytest.raises(ConfigError, match="train.swa.cycle_iters=0"):
        swa_settings(lazy)


@pytest.mark.slow
def test_train_net_writes_and_evaluates_the_swa_model(tmp_path):
    config = os.path.join(CONFIGS, "Synthetic", "vfnet_R_18_FPN_tiny_swa.yaml")
    log = run(
        "--config-file",
        config,
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.WARMUP_ITERS",
        "2",
        "INPUT.MIN_SIZE_TRAIN",
        "(160,)",
        "INPUT.MAX_SIZE_TRAIN",
        "224",
        "DATALOADER.NUM_WORKERS",
        "0",
        "INPUT.MIN_SIZE_TEST",
        "160",
        "INPUT.MAX_SIZE_TEST",
        "224",
        "TEST.EVAL_PERIOD",
        "0",
        "DATASETS.TEST",
        "('d2ext_shapes_minival',)",
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.SWA.NUM_CYCLES",
        "2",
        "SOLVER.SWA.CYCLE_ITERS",
        "1",
        "SOLVER.CHECKPOINT_PERIOD",
        "10",
        "OUTPUT_DIR",
        str(tmp_path),
    )
    assert "SWA: 2 cycles of 1 iterations from iteration 2" in log
    assert "SWA: the weights after iteration 3 averaged in (2 of 2)" in log
    assert "SWA: evaluating the average of 1 cycle-end weights" in log  # SOLVER.SWA.EVAL_PERIOD 1
    assert "SWA: evaluating the average of 2 cycle-end weights" in log
    assert os.path.isfile(tmp_path / SWA_FILENAME)
    assert os.path.isfile(tmp_path / "inference_swa" / "coco_instances_results.json")
    metrics = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 3  # 2 main + 2 SWA
    assert [m["iteration"] for m in metrics if "swa/bbox/AP" in m] == [3]
    assert "bbox/AP" in metrics[-1]  # the last model's
    # The average after each cycle, at the iteration that ended it.
    swa_metrics = [json.loads(line) for line in open(tmp_path / "swa_metrics.json")]
    assert [(m["iteration"], m["num_averaged"]) for m in swa_metrics] == [(2, 1), (3, 2)]
    last = next(m for m in metrics if "swa/bbox/AP" in m)["swa/bbox/AP"]
    assert repr(swa_metrics[-1]["swa/bbox/AP"]) == repr(last)  # nan after 4 iterations
    # The checkpoint holds the average, for --resume.
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["trainer"]["hooks"]["SWAHook"]["num_averaged"] == 2


@pytest.mark.slow
def test_lazy_config_trains_with_swa(tmp_path):
    config = tmp_path / "vfnet_tiny_swa.py"
    config.write_text(
        "from detectron2.config import LazyConfig\n"
        f"_cfg = LazyConfig.load({os.path.join(CONFIGS, 'Synthetic', 'vfnet_R_18_FPN_tiny.py')!r})\n"
        "model, dataloader, optimizer, lr_multiplier, train = (\n"
        "    _cfg.model, _cfg.dataloader, _cfg.optimizer, _cfg.lr_multiplier, _cfg.train)\n"
        "train.swa = dict(enabled=True, num_cycles=2, cycle_iters=1, lr_factor=1.0,\n"
        "                 lr_schedule='cyclic', min_lr_ratio=0.01, reset_optimizer=True)\n"
    )
    out = tmp_path / "out"
    log = run(
        "--config-file",
        str(config),
        "train.max_iter=1",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        f"train.output_dir={out}",
        "train.checkpointer.period=10",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[160]",
        "dataloader.train.mapper.augmentations.0.max_size=224",
        "dataloader.test.dataset.names=d2ext_shapes_minival",
        "dataloader.test.mapper.augmentations.0.short_edge_length=160",
        "dataloader.test.mapper.augmentations.0.max_size=224",
    )
    assert "SWA: the weights after iteration 2 averaged in (2 of 2)" in log
    assert "SWA: evaluating the average of 2 cycle-end weights" in log
    assert os.path.isfile(out / SWA_FILENAME)
    metrics = [json.loads(line) for line in open(out / "metrics.json")]
    assert any("swa/bbox/AP" in m for m in metrics)
