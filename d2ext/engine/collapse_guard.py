"""
A guard that names a failing training run while it fails, before Detectron2's final
``FloatingPointError: Loss became infinite or NaN``: fed each iteration's scalars, it logs one
warning per symptom (issue 31):

- **collapse** (AP-loss): the ranking's interpolated AP (``ap_loss/interpolated_ap``, median of
  the last ``window`` iterations) has fallen below ``collapse_ratio`` x its best such median while
  the negatives stay within δ of the lowest positive (median of ``ap_loss/num_active_neg`` /
  ``ap_loss/num_neg`` over the window >= ``active_fraction``): the scores no longer separate the
  positives (constant, or blown up) and the run rarely recovers;
- **explosion** (any ``loss_*`` key, and ``ap_loss/logit_std``, the spread of the classification
  scores): a value above ``explode_factor`` x its running median (last ``window`` x 5
  iterations), or not finite: the weights are running away and a NaN follows within a few
  iterations. The AP-loss is bounded and blind to the scores' scale, so a runaway classification
  branch shows in the score spread first and in loss_box_reg last (measured on d2ext_photos at
  4x the tiny learning rate: iterations 80 and 90, NaN at 92).

The warning names the symptom, its numbers and the keys to try (``MODEL.RETINANET.NORM`` unless
the head has a norm, ``SOLVER.BASE_LR``, ``SOLVER.WARMUP_ITERS``,
``SOLVER.CLIP_GRADIENTS.ENABLED``; lazy: ``model.head.norm``, ``optimizer.lr``,
``d2ext.solver.clip_gradients``). :class:`APLossRetinaNet` feeds its guard every training
iteration, whatever the trainer (yaml, lazy, compare_methods); :class:`TrainingGuard` itself needs
neither a model nor an event storage, so a test feeds it a sequence of values.
"""

import logging
import math
from collections import deque
from statistics import median
from typing import Deque, Dict, List, Mapping, Optional

logger = logging.getLogger(__name__)

AP_KEY = "ap_loss/interpolated_ap"
ACTIVE_KEY = "ap_loss/num_active_neg"
NEG_KEY = "ap_loss/num_neg"
SCALE_KEYS = ("ap_loss/logit_std",)  # watched like the losses

NORM_HEAD_HINT = 'a normalised head, MODEL.RETINANET.NORM "GN" (lazy: model.head.norm="GN"); '
KEYS_TO_TRY = (
    "a lower SOLVER.BASE_LR (lazy: optimizer.lr), e.g. 4x; a longer SOLVER.WARMUP_ITERS; "
    "SOLVER.CLIP_GRADIENTS.ENABLED (lazy: d2ext.solver.clip_gradients). "
    "configs/Synthetic/aploss_retinanet_R_18_FPN_tiny.yaml states what was measured"
)


class TrainingGuard:
    """
    Watches per-iteration scalars (``update``) and warns once per symptom (and per loss key)
    when training collapses or a loss explodes; see the module's docstring.

    Args:
        window: iterations of the running median of the interpolated AP.
        collapse_ratio: collapse when that median < ratio x its best.
        min_best_ap: ... and that best is at least this (the ranking had learned something:
            a freshly initialised model ranks at the positives' fraction, ~0.002 here).
        active_fraction: ... and the window's median of num_active_neg / num_neg is at least
            this (most negatives within delta of the lowest positive).
        explode_factor: explosion when a loss (or the score spread) > factor x its running
            median ...
        min_history: ... over at least this many earlier iterations.
        prefix: the warning's first words (e.g. the model's name).
        norm_head_hint: whether the warning suggests a normalised head (the model's head has
            none).
    """

    def __init__(
        self,
        *,
        window: int = 20,
        collapse_ratio: float = 0.25,
        min_best_ap: float = 0.01,
        active_fraction: float = 0.9,
        explode_factor: float = 1e3,
        min_history: int = 20,
        prefix: str = "Training",
        norm_head_hint: bool = True,
    ):
        self.window = window
        self.collapse_ratio = collapse_ratio
        self.min_best_ap = min_best_ap
        self.active_fraction = active_fraction
        self.explode_factor = explode_factor
        self.min_history = min_history
        self.prefix = prefix
        self.keys_to_try = (NORM_HEAD_HINT if norm_head_hint else "") + KEYS_TO_TRY
        self._ap: Deque[float] = deque(maxlen=window)
        self._active: Deque[float] = deque(maxlen=window)
        self._best_ap = 0.0
        self._best_iter: Optional[int] = None
        self._losses: Dict[str, Deque[float]] = {}
        # Symptom warned of (e.g. "collapse", "explosion:loss_box_reg") -> iteration.
        self.warned: Dict[str, int] = {}

    def update(self, iteration: int, values: Mapping[str, float]) -> List[str]:
        """Feeds one iteration's scalars (``loss_*`` keys and, for AP-loss, the ``ap_loss/*``
        ones; missing keys are skipped). Returns the warnings it logged now (usually none)."""
        messages = []
        for key, value in values.items():
            if key.startswith("loss") or key in SCALE_KEYS:
                msg = self._check_loss(iteration, key, float(value))
                if msg:
                    messages.append(msg)
        if AP_KEY in values:
            msg = self._check_collapse(iteration, values)
            if msg:
                messages.append(msg)
        for msg in messages:
            logger.warning(msg)
        return messages

    def _check_loss(self, iteration: int, key: str, value: float) -> Optional[str]:
        history = self._losses.setdefault(key, deque(maxlen=5 * self.window))
        symptom = f"explosion:{key}"
        msg = None
        if symptom not in self.warned:
            if not math.isfinite(value):
                msg = f"{self.prefix}: {key} is {value} at iteration {iteration}: training has diverged"
            elif len(history) >= self.min_history:
                ref = median(history)
                if ref > 0 and value > self.explode_factor * ref:
                    msg = (
                        f"{self.prefix}: {key} exploded at iteration {iteration}: {value:.3g} is "
                        f"{value / ref:.3g}x its running median {ref:.3g} (last {len(history)} "
                        "iterations). The weights are running away; a FloatingPointError (NaN or "
                        "infinite loss) usually follows within a few iterations"
                    )
        if msg:
            self.warned[symptom] = iteration
            return f"{msg}. To try: {self.keys_to_try}."
        if math.isfinite(value):
            history.append(value)
        return None

    def _check_collapse(self, iteration: int, values: Mapping[str, float]) -> Optional[str]:
        ap = float(values[AP_KEY])
        num_neg = float(values.get(NEG_KEY, 0))
        active = float(values.get(ACTIVE_KEY, 0))
        if not math.isfinite(ap):
            return None
        self._ap.append(ap)
        self._active.append(active / num_neg if num_neg > 0 else 0.0)
        if len(self._ap) < self.window:
            return None
        current = median(self._ap)
        if current > self._best_ap:
            self._best_ap, self._best_iter = current, iteration
        if "collapse" in self.warned or self._best_ap < self.min_best_ap:
            return None
        active_median = median(self._active)
        if current < self.collapse_ratio * self._best_ap and active_median >= self.active_fraction:
            self.warned["collapse"] = iteration
            return (
                f"{self.prefix}: training collapsed at iteration {iteration}: the interpolated AP "
                f"of the ranking ({AP_KEY}, median of the last {self.window} iterations) is "
                f"{current:.4g}, below {self.collapse_ratio:g}x its best {self._best_ap:.4g} "
                f"(iteration {self._best_iter}), while the negatives stay within delta of the "
                f"lowest positive ({ACTIVE_KEY} / {NEG_KEY}: median {active_median:.0%}): the "
                "classification scores no longer separate the positives (constant, or a runaway "
                f"scale) and training rarely recovers. To try: {self.keys_to_try}."
            )
        return None
