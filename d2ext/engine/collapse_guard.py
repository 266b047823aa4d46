"""
A guard that names a failing training run while it fails, before Detectron2's final
``FloatingPointError: Loss became infinite or NaN``: fed each iteration's scalars, it logs one
warning per symptom (GitHub issue 31):

- **collapse** (AP-loss): the ranking's interpolated AP (``ap_loss/interpolated_ap``, median of
  the last ``window`` iterations) has fallen below ``collapse_ratio`` x its best such median while
  (nearly) every negative stays within δ of the lowest positive (``ap_loss/num_active_neg`` ≈
  ``ap_loss/num_neg``): the classification scores have become constant and the error-driven
  update, being invariant to a shift of all scores, no longer moves them apart;
- **explosion** (any ``loss_*`` key): a loss above ``explode_factor`` x its running median (last
  ``window`` x 5 iterations), or not finite: the weights are running away and a NaN follows
  within a few iterations.

The warning names the symptom, its numbers and the keys to try (``SOLVER.BASE_LR``,
``SOLVER.WARMUP_ITERS``, ``SOLVER.CLIP_GRADIENTS.ENABLED``; lazy: ``optimizer.lr``,
``d2ext.solver.clip_gradients``). :class:`APLossRetinaNet` feeds one every training iteration
(whatever the trainer: yaml, lazy, compare_methods); :class:`TrainingGuard` itself needs neither a
model nor an event storage, so a test feeds it a sequence of values.
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

KEYS_TO_TRY = (
    "lower SOLVER.BASE_LR (lazy: optimizer.lr), e.g. 4x; lengthen SOLVER.WARMUP_ITERS; "
    "enable SOLVER.CLIP_GRADIENTS.ENABLED (lazy: d2ext.solver.clip_gradients). "
    "configs/Synthetic/aploss_retinanet_R_18_FPN_tiny.yaml states a recipe that trains"
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
        active_fraction: ... and num_active_neg >= this x num_neg in at least
            ``active_share`` of the window's iterations.
        explode_factor: explosion when a loss > factor x its running median ...
        min_history: ... over at least this many earlier iterations.
        prefix: the warning's first words (e.g. the model's name).
    """

    def __init__(
        self,
        *,
        window: int = 20,
        collapse_ratio: float = 0.25,
        min_best_ap: float = 0.02,
        active_fraction: float = 0.99,
        active_share: float = 0.9,
        explode_factor: float = 1e3,
        min_history: int = 20,
        prefix: str = "Training",
    ):
        self.window = window
        self.collapse_ratio = collapse_ratio
        self.min_best_ap = min_best_ap
        self.active_fraction = active_fraction
        self.active_share = active_share
        self.explode_factor = explode_factor
        self.min_history = min_history
        self.prefix = prefix
        self._ap: Deque[float] = deque(maxlen=window)
        self._all_active: Deque[bool] = deque(maxlen=window)
        self._best_ap = 0.0
        self._best_iter: Optional[int] = None
        self._losses: Dict[str, Deque[float]] = {}
        self.warned: Dict[
            str, int
        ] = {}  # symptom (e.g. "collapse", "explosion:loss_box_reg") -> iteration

    def update(self, iteration: int, values: Mapping[str, float]) -> List[str]:
        """Feeds one iteration's scalars (``loss_*`` keys and, for AP-loss, the ``ap_loss/*``
        ones; missing keys are skipped). Returns the warnings it logged now (usually none)."""
        messages = []
        for key, value in values.items():
            if key.startswith("loss"):
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
            return f"{msg}. To try: {KEYS_TO_TRY}."
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
        self._all_active.append(num_neg > 0 and active >= self.active_fraction * num_neg)
        if len(self._ap) < self.window:
            return None
        current = median(self._ap)
        if current > self._best_ap:
            self._best_ap, self._best_iter = current, iteration
        if "collapse" in self.warned or self._best_ap < self.min_best_ap:
            return None
        share = sum(self._all_active) / len(self._all_active)
        if current < self.collapse_ratio * self._best_ap and share >= self.active_share:
            self.warned["collapse"] = iteration
            return (
                f"{self.prefix}: training collapsed at iteration {iteration}: the interpolated AP "
                f"of the ranking ({AP_KEY}, median of the last {self.window} iterations) is "
                f"{current:.4g}, below {self.collapse_ratio:g}x its best {self._best_ap:.4g} "
                f"(iteration {self._best_iter}), while every negative stays within delta of the "
                f"lowest positive ({ACTIVE_KEY} >= {self.active_fraction:g} x {NEG_KEY} in "
                f"{share:.0%} of those iterations): the classification scores have become "
                "(nearly) constant and the error-driven update, unchanged by a shift of all scores, "
                f"cannot separate them again. To try: {KEYS_TO_TRY}."
            )
        return None
