"""The training guard of issue 31 (d2ext/engine/collapse_guard.py): a warning that names a
collapse (the interpolated AP falls far below its best while every negative stays active) or a
loss explosion, fed synthetic sequences of the logged values, and wired into APLossRetinaNet
(a tiny model driven into both failures)."""

import logging
import math
import os

import numpy as np
import pytest
import torch
from conftest import CONFIGS, build_tiny_model, make_inputs
from detectron2.utils.events import EventStorage

from d2ext.engine.collapse_guard import TrainingGuard

TINY = os.path.join(CONFIGS, "Synthetic", "aploss_retinanet_R_18_FPN_tiny.yaml")
NUM_NEG = 400_000


def feed(guard, aps, active_fraction=1.0, start=0, box_losses=None):
    """Feeds iterations start, start + 1, ... of AP values; returns {iteration: messages}."""
    out = {}
    for i, ap in enumerate(aps):
        values = {
            "loss_cls": 1.0 - ap,
            "ap_loss/interpolated_ap": ap,
            "ap_loss/num_neg": NUM_NEG,
            "ap_loss/num_active_neg": active_fraction * NUM_NEG,
        }
        if box_losses is not None:
            values["loss_box_reg"] = box_losses[i]
        messages = guard.update(start + i, values)
        if messages:
            out[start + i] = messages
    return out


def noisy(rng, values, rel=0.3):
    values = np.asarray(values, dtype=float)
    return list(values * (1 + rel * rng.uniform(-1, 1, len(values))))


def test_collapse_as_logged_on_photos_warns_once_naming_the_keys():
    # Issue 31, seed 42: the interpolated AP rose to 0.06 by iteration 59, then fell to 0.0008
    # and stayed there with num_active_neg == num_neg.
    rng = np.random.default_rng(0)
    rising = noisy(rng, np.linspace(0.002, 0.06, 60))
    fallen = noisy(rng, np.full(100, 0.0008))
    guard = TrainingGuard(prefix="APLossRetinaNet")
    warnings = feed(guard, rising + fallen)
    assert list(warnings) == [guard.warned["collapse"]]
    # Warned within the window (20 iterations) after the fall, not at the end.
    assert 60 <= guard.warned["collapse"] < 85
    (message,) = warnings[guard.warned["collapse"]]
    assert "collapsed" in message and "ap_loss/interpolated_ap" in message
    assert "ap_loss/num_active_neg" in message
    for key in (
        "MODEL.RETINANET.NORM",
        "SOLVER.BASE_LR",
        "SOLVER.CLIP_GRADIENTS.ENABLED",
        "SOLVER.WARMUP_ITERS",
        "optimizer.lr",
    ):
        assert key in message


def test_healthy_noisy_training_does_not_warn():
    # The interpolated AP of one minibatch swings by 2-3x from batch to batch (measured: 0.03 to
    # 0.13 around iteration 160 on d2ext_photos); dips of a few iterations are not a collapse.
    rng = np.random.default_rng(1)
    aps = noisy(rng, np.linspace(0.002, 0.15, 240), rel=0.6)
    for i in range(100, 240, 40):
        aps[i : i + 3] = [0.001] * 3
    guard = TrainingGuard()
    assert feed(guard, aps, box_losses=noisy(rng, np.linspace(0.7, 0.4, 240))) == {}
    assert guard.warned == {}


def test_no_collapse_warning_while_negatives_separate():
    # The AP falls but most negatives are below the lowest positive - delta: the scores are not
    # constant (a hard stretch of data, not the collapse).
    rng = np.random.default_rng(2)
    guard = TrainingGuard()
    aps = noisy(rng, np.linspace(0.002, 0.1, 60)) + noisy(rng, np.full(60, 0.005))
    assert feed(guard, aps, active_fraction=0.5) == {}


def test_no_collapse_warning_before_the_ranking_learned_anything():
    # At initialisation the AP is the positives' share (~0.002) with every negative active.
    guard = TrainingGuard()
    assert feed(guard, noisy(np.random.default_rng(3), np.full(200, 0.0015))) == {}


def test_loss_explosion_warns_before_the_nan():
    # Issue 31, seed 43: loss_box_reg 6.8e15, then FloatingPointError at iteration 150.
    rng = np.random.default_rng(4)
    box = noisy(rng, np.full(100, 0.6), rel=0.2)
    box += [0.6 * 10.0 ** (k / 2) for k in range(1, 33)] + [math.nan]  # x10 every 2 iterations
    guard = TrainingGuard(prefix="APLossRetinaNet")
    warnings = feed(guard, noisy(rng, np.linspace(0.002, 0.06, len(box))), box_losses=box)
    assert list(warnings) == [guard.warned["explosion:loss_box_reg"]]
    first = guard.warned["explosion:loss_box_reg"]
    assert box[first] > 1e3 * 0.5 and box[first - 1] < 1e3 * 0.7  # the first value past 1000x
    assert first < len(box) - 1  # before the NaN
    (message,) = warnings[first]
    assert "loss_box_reg exploded" in message and "FloatingPointError" in message
    assert "SOLVER.BASE_LR" in message and "SOLVER.CLIP_GRADIENTS.ENABLED" in message


def test_non_finite_loss_warns_when_nothing_warned_before():
    guard = TrainingGuard()
    messages = guard.update(3, {"loss_box_reg": math.inf})
    assert len(messages) == 1 and "loss_box_reg is inf at iteration 3" in messages[0]
    assert guard.update(4, {"loss_box_reg": math.nan}) == []  # once per key


def test_a_normalised_head_is_not_suggested_to_a_model_that_has_one():
    model = build_tiny_model(TINY, "MODEL.RETINANET.NORM", "GN")
    assert "MODEL.RETINANET.NORM" not in model.guard.keys_to_try
    assert "SOLVER.BASE_LR" in model.guard.keys_to_try


def test_warning_is_logged():
    logger = logging.getLogger("d2ext.engine.collapse_guard")
    handler = _ListHandler()
    logger.addHandler(handler)
    try:
        TrainingGuard().update(0, {"loss_cls": math.nan})
    finally:
        logger.removeHandler(handler)
    assert [r.levelno for r in handler.records] == [logging.WARNING]
    assert "loss_cls is nan" in handler.records[0].getMessage()


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_logit_spread_explosion_warns():
    rng = np.random.default_rng(5)
    spread = noisy(rng, np.linspace(0.01, 1.5, 60)) + [1.5 * 4.0**k for k in range(1, 8)]
    guard = TrainingGuard()
    warned = {}
    for i, value in enumerate(spread):
        if guard.update(i, {"ap_loss/logit_std": value}):
            warned[i] = value
    # The first value past 1000x the running median (~0.75): 1.5 x 4^5 = 1536.
    assert warned == {64: pytest.approx(1536.0)}
    assert guard.warned == {"explosion:ap_loss/logit_std": 64}


def replay(sequence):
    """Feeds a measured run (the columns below) to a guard with the defaults; returns it."""
    columns = {k: [float(x) for x in v.split()] for k, v in sequence.items()}
    n = len(columns["ap_loss/interpolated_ap"])
    assert all(len(v) == n for v in columns.values())
    guard = TrainingGuard()
    for i in range(n):
        values = {k: v[i] for k, v in columns.items() if k != "active_share"}
        values["ap_loss/num_neg"] = NUM_NEG
        values["ap_loss/num_active_neg"] = columns["active_share"][i] * NUM_NEG
        values["loss_cls"] = 1.0 - values["ap_loss/interpolated_ap"]
        guard.update(i, values)
    return guard


def test_measured_runaway_warns_ten_iterations_before_the_nan():
    """The norm-free tiny AP-loss RetinaNet at 4x the tiny learning rate on d2ext_photos: the
    score spread explodes first, then the AP collapses with the negatives active, then
    loss_box_reg; Detectron2's FloatingPointError came at iteration 92."""
    guard = replay(RUNAWAY)
    assert guard.warned == {
        "explosion:ap_loss/logit_std": 80,
        "collapse": 84,
        "explosion:loss_box_reg": 90,
    }


def test_measured_healthy_run_is_silent():
    """The same model at the tiny learning rate (0.02), which trained (16.6 AP): its noisy
    interpolated AP, active share, growing score spread and falling losses warn of nothing."""
    guard = replay(HEALTHY)
    assert guard.warned == {}
    assert guard._best_ap > 0.1


def _train(model, inputs, lrs, kill_tower_at=None):
    """SGD steps of the model on one fixed batch at learning rates `lrs`, in one event storage
    whose iteration follows; at `kill_tower_at` the classification tower's last ReLU is made
    dead everywhere (the bias before it -100: the end of the dead-ReLU drift measured in issue
    31). Returns {iteration: symptoms the guard warned of}."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=0.9)
    out = {}
    with EventStorage(0) as storage:
        for i, lr in enumerate(lrs):
            storage.iter = i
            if i == kill_tower_at:
                with torch.no_grad():
                    model.head.cls_subnet[-2].bias.fill_(-100.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            before = set(model.guard.warned)
            loss = sum(model(inputs).values())
            new = [k for k in model.guard.warned if k not in before]
            if new:
                out[i] = new
            if not torch.isfinite(loss):
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return out


def _tiny_model():
    # The norm-free head (Detectron2's RetinaNet head, the paper's), the one that ran away.
    model = build_tiny_model(
        TINY, "MODEL.RETINANET.NUM_CONVS", "1", "MODEL.RETINANET.NORM", "", seed=0
    )
    model.train()
    assert 'MODEL.RETINANET.NORM "GN"' in model.guard.keys_to_try
    # Shorter windows than the defaults, so that a few iterations show it.
    model.guard = TrainingGuard(prefix="APLossRetinaNet", window=5, min_history=5)
    inputs = make_inputs([[[8, 8, 60, 70], [50, 20, 120, 90]], [[30, 10, 110, 80]]], size=(96, 128))
    return model, inputs


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 96 x 128 batch: more threads only spin on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def guard_log():
    handler = _ListHandler()
    logger = logging.getLogger("d2ext.engine.collapse_guard")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


@pytest.mark.slow
def test_tiny_model_forced_collapse_warns(guard_log):
    """A tiny APLossRetinaNet learns one batch (its ranking's AP rises to ~0.95), then its
    classification tower dies: the scores are constant, the AP falls to the chance level and
    stays there (no update reaches a dead ReLU) and the guard in the model says so."""
    model, inputs = _tiny_model()
    warnings = _train(model, inputs, [0.01] * 30, kill_tower_at=20)
    assert model.guard._best_ap > 0.5  # learned before the collapse
    # Once the 5-iteration window's medians are collapsed: its third collapsed iteration.
    assert warnings == {22: ["collapse"]}
    (record,) = guard_log
    assert "APLossRetinaNet: training collapsed at iteration 22" in record.getMessage()
    assert "SOLVER.BASE_LR" in record.getMessage()


@pytest.mark.slow
def test_tiny_model_with_an_absurd_learning_rate_warns_before_the_nan(guard_log):
    """The same model, then steps at lr 50: the score spread and loss_box_reg explode (x1e4 in
    one step), then NaN. The guard warns at the explosion, before Detectron2 would raise."""
    model, inputs = _tiny_model()
    warnings = _train(model, inputs, [0.01] * 25 + [50.0] * 10)
    first = min(warnings)
    assert first > 25
    assert sorted(warnings[first]) == ["explosion:ap_loss/logit_std", "explosion:loss_box_reg"]
    assert max(warnings) > first  # the NaN came later (and is named too)
    messages = [r.getMessage() for r in guard_log]
    assert any("loss_box_reg exploded" in m for m in messages)
    assert any("ap_loss/logit_std exploded" in m for m in messages)


# Per-iteration values logged by the model (probe runs of issue 31, the 240-iteration schedule of
# compare_methods --max-iter 240: warmup 48, steps 192/226; active_share = num_active_neg / num_neg).
# d2ext_photos, norm-free head, lr 0.08, seed 42: NaN at iteration 92 (iterations 0-91, every iteration).
RUNAWAY = {
    "ap_loss/interpolated_ap": """
        0.00156 0.00165 0.00117 0.00146 0.00114 0.00151 0.00166 0.00084 0.00104 0.00132 0.0013
        0.00154 0.0011 0.00141 0.0018 0.00149 0.00115 0.0148 0.0137 0.0169 0.0344 0.0365 0.022
        0.0126 0.0113 0.0229 0.0382 0.0128 0.00705 0.0139 0.0313 0.016 0.00656 0.00713 0.0276 0.0139
        0.017 0.0213 0.0161 0.0196 0.0306 0.0174 0.0391 0.0227 0.0113 0.0266 0.0466 0.0229 0.022
        0.038 0.0134 0.0361 0.0196 0.0381 0.0186 0.037 0.0204 0.00476 0.0138 0.0223 0.0229 0.0114
        0.0239 0.00583 0.0074 0.01 0.00659 0.00534 0.0143 0.0215 0.00298 0.00668 0.0081 0.013
        0.00884 0.00141 0.00646 0.0038 0.00162 0.00277 0.00127 0.00382 0.00219 0.00205 0.00201
        0.00177 0.00201 0.0019 0.00136 0.0047 0.00528 0.343
    """,
    "active_share": """
        1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 0.998 1 1 1 1 1 1 0.737
        0.914 0.964 0.504 0.684 0.694 0.972 0.836 0.782 0.662 0.967 0.998 0.816 0.671 0.651 0.629
        0.572 0.5 0.528 0.783 0.835 0.545 0.533 0.677 0.512 0.569 0.389 0.321 0.871 0.674 0.772
        0.741 0.995 0.997 0.988 0.93 0.996 0.94 0.963 0.995 0.934 0.996 0.819 0.996 0.996 0.996
        0.987 0.987 0.998 0.996 1 0.985 0.989
    """,
    "ap_loss/logit_std": """
        0.00759 0.00744 0.00755 0.00753 0.00768 0.00797 0.00872 0.0102 0.0126 0.0159 0.0203 0.0258
        0.0327 0.042 0.0552 0.0757 0.12 0.236 0.51 0.747 0.715 0.481 0.451 0.532 0.249 0.369 0.654
        0.853 0.227 0.553 0.762 0.879 0.401 0.441 0.637 0.995 0.763 0.826 0.87 1.21 1.69 1.79 1.63
        1.67 1.31 1.33 1.54 1.3 1.4 1.64 1.51 1.68 2.1 2.28 2.84 3.13 2.94 2.51 2.8 3.34 4.08 4.57
        5.68 6.83 7.89 9.8 10.1 11.9 13.2 19.6 13.8 14.4 17.8 13.2 14.6 28.6 179 231 247 326
        1.47e+03 2.75e+03 3.98e+03 2.71e+03 2.69e+03 1.63e+03 1.28e+03 5.25e+03 4.72e+04 4.69e+05
        2.46e+10 2.14e+32
    """,
    "loss_box_reg": """
        0.713 0.717 0.707 0.734 0.723 0.723 0.715 0.699 0.712 0.708 0.702 0.7 0.697 0.709 0.71 0.713
        0.701 0.715 0.708 0.677 0.714 0.689 0.67 0.658 0.637 0.634 0.668 0.71 0.577 0.628 0.632
        0.679 0.616 0.649 0.611 0.598 0.635 0.599 0.615 0.603 0.569 0.631 0.628 0.56 0.605 0.596
        0.654 0.616 0.606 0.612 0.619 0.601 0.585 0.548 0.592 0.604 0.584 0.612 0.585 0.523 0.583
        0.584 0.581 0.604 0.619 0.613 0.619 0.569 0.569 0.622 0.577 0.652 0.587 0.55 0.589 0.675
        0.601 0.642 0.617 0.62 0.645 0.617 0.631 0.632 0.625 0.622 0.621 0.644 0.662 1.07 875
        5.68e+15
    """,
}


# d2ext_photos, norm-free head, lr 0.02, seed 42: 240 iterations, 16.6 AP (iterations 0-239, every iteration).
HEALTHY = {
    "ap_loss/interpolated_ap": """
        0.00156 0.00165 0.00117 0.00146 0.00114 0.00151 0.00166 0.000836 0.00103 0.00131 0.00129
        0.00152 0.00107 0.00135 0.00169 0.00133 0.000842 0.00118 0.00101 0.00107 0.00103 0.00132
        0.00159 0.00152 0.00144 0.00146 0.00127 0.0015 0.00338 0.00944 0.0134 0.0115 0.031 0.0178
        0.041 0.0119 0.0154 0.0144 0.0184 0.0168 0.0164 0.0129 0.0293 0.0264 0.0226 0.0383 0.019
        0.0312 0.0197 0.0269 0.0269 0.0361 0.0209 0.034 0.0241 0.0428 0.0342 0.0386 0.0343 0.0363
        0.0389 0.0308 0.0475 0.0454 0.0296 0.0279 0.0311 0.0386 0.0616 0.026 0.0286 0.0469 0.0552
        0.0381 0.0377 0.0208 0.0267 0.0732 0.063 0.0424 0.0222 0.0227 0.0249 0.0453 0.0336 0.0448
        0.033 0.0207 0.0417 0.0396 0.0445 0.0415 0.0367 0.0606 0.0557 0.0667 0.0444 0.0231 0.0438
        0.0763 0.0293 0.0235 0.0274 0.0593 0.0514 0.0368 0.065 0.0501 0.0527 0.0579 0.0319 0.0444
        0.0307 0.0401 0.0307 0.0609 0.0566 0.0291 0.0518 0.0754 0.0478 0.0411 0.0219 0.0334 0.034
        0.0431 0.0454 0.036 0.0446 0.0477 0.084 0.0726 0.0784 0.0612 0.0501 0.0927 0.0734 0.0679
        0.0643 0.0686 0.0501 0.0581 0.0462 0.0788 0.0625 0.0688 0.0677 0.0687 0.0867 0.0979 0.0744
        0.0517 0.101 0.0981 0.114 0.0528 0.102 0.106 0.0416 0.0928 0.0828 0.0559 0.068 0.0432 0.0699
        0.0566 0.0814 0.115 0.0965 0.143 0.0768 0.0805 0.0825 0.0932 0.0788 0.133 0.0895 0.0976
        0.208 0.106 0.0792 0.142 0.159 0.095 0.0917 0.0678 0.166 0.224 0.0942 0.123 0.0746 0.116
        0.111 0.0505 0.13 0.0736 0.167 0.17 0.133 0.0708 0.133 0.162 0.0919 0.203 0.0957 0.165 0.17
        0.166 0.166 0.197 0.17 0.119 0.209 0.132 0.181 0.141 0.184 0.124 0.131 0.187 0.136 0.206
        0.0827 0.14 0.174 0.161 0.164 0.184 0.105 0.163 0.273 0.122 0.189 0.145 0.197 0.174 0.127
        0.119 0.205 0.132
    """,
    "active_share": """
        1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1
        1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 0.971 1 0.654 1 0.976 1 1 1 0.999 0.997 1
        1 1 1 1 0.926 1 0.992 1 1 1 1 0.999 1 1 1 1 1 0.998 0.998 0.999 0.997 0.965 1 0.989 0.999
        0.998 0.938 0.91 0.981 1 0.902 0.912 1 0.998 0.861 0.884 0.807 0.82 0.879 0.562 0.974 0.709
        1 0.955 0.581 1 0.985 0.992 0.712 0.994 0.791 0.915 0.818 0.869 0.76 0.877 0.78 0.727 0.799
        0.692 0.756 0.885 0.709 0.848 0.791 0.645 0.527 0.641 0.617 0.872 0.623 0.583 0.822 0.542
        0.685 0.519 0.405 0.845 0.689 0.793 0.841 0.525 0.707 0.469 0.464 0.509 0.812 0.487 0.449
        0.538 0.595 0.531 0.479 0.397 0.347 0.61 0.555 0.342 0.549 0.828 0.725 0.914 0.671 0.441
        0.449 0.576 0.602 0.603 0.44 0.648 0.712 0.711 0.585 0.712 0.56 0.454 0.682 0.634 0.622
        0.523 0.598 0.655 0.525 0.595 0.512 0.606 0.392 0.787 0.632 0.436 0.475 0.6 0.592 0.419
        0.439 0.586 0.597 0.504 0.707 0.57 0.829 0.668 0.6 0.46 0.378 0.315 0.489 0.421 0.308 0.518
        0.409 0.611 0.345 0.648 0.352 0.486 0.6 0.492
    """,
    "ap_loss/logit_std": """
        0.00759 0.00743 0.00754 0.0075 0.00754 0.00752 0.00755 0.00768 0.00791 0.00822 0.00873
        0.00947 0.0104 0.0117 0.0133 0.0151 0.0174 0.0198 0.0228 0.0261 0.0298 0.0341 0.0391 0.0458
        0.0541 0.0644 0.0803 0.105 0.156 0.23 0.379 0.544 0.655 0.766 0.67 0.57 0.573 0.581 0.529
        0.459 0.35 0.298 0.335 0.489 0.552 0.587 0.518 0.433 0.407 0.49 0.562 0.535 0.437 0.442
        0.553 0.61 0.498 0.449 0.456 0.528 0.6 0.575 0.617 0.626 0.514 0.575 0.631 0.525 0.542 0.67
        0.723 0.624 0.66 0.838 0.806 0.641 0.662 0.878 1.02 0.862 0.586 0.475 0.559 0.645 0.694
        0.689 0.773 0.784 0.752 0.598 0.558 0.596 0.696 0.794 0.76 0.606 0.56 0.547 0.578 0.599
        0.604 0.568 0.568 0.613 0.712 0.774 0.779 0.77 0.724 0.679 0.674 0.696 0.666 0.634 0.697
        0.729 0.765 0.798 0.852 0.891 0.959 0.934 0.862 0.826 0.861 0.968 1.03 0.962 0.854 0.884
        0.91 0.924 0.883 0.844 0.813 0.805 0.852 0.864 0.924 0.966 0.981 0.957 0.947 0.915 0.941
        0.937 0.986 1.07 1.07 1.01 0.992 1.01 1.07 1.13 1.12 1.16 1.14 1.14 1.2 1.23 1.24 1.26 1.24
        1.24 1.26 1.24 1.28 1.29 1.32 1.33 1.29 1.23 1.21 1.26 1.3 1.29 1.34 1.36 1.34 1.34 1.29
        1.28 1.26 1.26 1.27 1.34 1.41 1.45 1.45 1.44 1.43 1.46 1.44 1.48 1.46 1.5 1.49 1.47 1.44
        1.49 1.53 1.49 1.5 1.51 1.48 1.48 1.53 1.51 1.53 1.48 1.5 1.51 1.51 1.52 1.56 1.48 1.52 1.55
        1.53 1.49 1.48 1.49 1.44 1.44 1.51 1.51 1.46 1.52 1.48 1.5 1.49 1.51 1.47 1.52 1.46 1.5 1.49
        1.46 1.5 1.47
    """,
    "loss_box_reg": """
        0.713 0.717 0.707 0.734 0.724 0.723 0.716 0.7 0.714 0.709 0.704 0.702 0.7 0.713 0.716 0.719
        0.709 0.728 0.721 0.694 0.746 0.72 0.717 0.722 0.693 0.738 0.709 0.743 0.696 0.727 0.678
        0.731 0.69 0.724 0.688 0.688 0.682 0.686 0.671 0.646 0.627 0.632 0.656 0.623 0.679 0.612
        0.653 0.615 0.62 0.626 0.654 0.619 0.62 0.607 0.624 0.606 0.617 0.636 0.625 0.577 0.611
        0.578 0.613 0.642 0.62 0.591 0.6 0.603 0.587 0.608 0.611 0.59 0.564 0.567 0.599 0.611 0.572
        0.605 0.595 0.601 0.637 0.567 0.567 0.558 0.574 0.58 0.587 0.554 0.606 0.559 0.596 0.548
        0.541 0.534 0.553 0.503 0.565 0.632 0.571 0.566 0.543 0.506 0.552 0.508 0.503 0.528 0.515
        0.542 0.524 0.503 0.558 0.522 0.508 0.545 0.566 0.569 0.532 0.539 0.537 0.493 0.526 0.534
        0.56 0.531 0.537 0.538 0.496 0.523 0.519 0.536 0.449 0.503 0.509 0.539 0.489 0.441 0.464
        0.499 0.53 0.475 0.51 0.546 0.517 0.453 0.426 0.495 0.486 0.528 0.418 0.433 0.469 0.483
        0.496 0.473 0.402 0.487 0.471 0.462 0.485 0.498 0.426 0.453 0.468 0.461 0.481 0.498 0.433
        0.413 0.461 0.423 0.463 0.385 0.473 0.457 0.398 0.446 0.478 0.438 0.332 0.436 0.495 0.438
        0.42 0.451 0.362 0.4 0.404 0.407 0.38 0.359 0.412 0.391 0.393 0.432 0.39 0.398 0.37 0.37
        0.404 0.453 0.389 0.337 0.377 0.358 0.418 0.374 0.346 0.373 0.374 0.389 0.374 0.355 0.462
        0.376 0.372 0.327 0.359 0.363 0.387 0.327 0.349 0.31 0.382 0.35 0.338 0.361 0.391 0.33 0.366
        0.323 0.328 0.375 0.386 0.38 0.281 0.331 0.377 0.381 0.383 0.37
    """,
}
