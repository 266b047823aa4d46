"""The training progress bar's remaining-time estimate (Eta), from measured seconds per
iteration."""

import math
from typing import Dict, List, Optional

from tqdm import tqdm


class Eta:
    """Remaining time of the plan from measured seconds per iteration: each config's own once one
    of its runs finished; before that its benchmark step time scaled by the ratio of training
    (with data loading and evaluation) to benchmark time measured so far; with nothing trained
    yet, the benchmark step time alone (a lower bound, shown with ">")."""

    def __init__(self, step_s: Dict[str, float]):
        self.step_s = step_s
        self.per_iter: Dict[str, List[float]] = {}

    def add(self, name: str, s_per_iter: float):
        self.per_iter.setdefault(name, []).append(s_per_iter)

    def seconds_per_iter(self, name: str):
        if name in self.per_iter:
            return sum(self.per_iter[name]) / len(self.per_iter[name]), True
        ratios = [
            sum(v) / len(v) / self.step_s[n] for n, v in self.per_iter.items() if n in self.step_s
        ]
        if ratios and name in self.step_s:
            return self.step_s[name] * sum(ratios) / len(ratios), True
        return self.step_s.get(name, float("nan")), False

    def remaining(
        self, todo: Dict[str, int], jobs: int = 1, runs_left: Optional[int] = None
    ) -> str:
        """The remaining time, the work divided among min(jobs, runs left) concurrent runs."""
        total, measured = 0.0, True
        for name, iters in todo.items():
            s, m = self.seconds_per_iter(name)
            total, measured = total + s * iters, measured and m
        if math.isnan(total):
            return "ETA ?"
        parallel = min(jobs, runs_left or jobs)
        return "ETA " + ("" if measured else ">") + tqdm.format_interval(total / parallel)
