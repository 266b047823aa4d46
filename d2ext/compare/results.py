"""A finished run's result (its result.json) from its metrics.json: the final COCO APs
(FINAL_KEYS), per-class AP and the AP and loss curves."""

from typing import List

from .plan import Run

FINAL_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def summarize(run: Run, metrics: List[dict], wall_s: float) -> dict:
    """The result of a finished run from its metrics.json: the last evaluation (AP, AP50, ...,
    per-class AP as COCOEvaluator names them "AP-<class>") and the curves."""
    evals = [m for m in metrics if "bbox/AP" in m]
    if not evals:
        raise RuntimeError(
            f"{run.output_dir}/metrics.json has no bbox/AP: the evaluation did not run"
        )
    last = evals[-1]
    return {
        "config": run.config,
        "name": run.name,
        "seed": run.seed,
        "max_iter": run.max_iter,
        "wall_s": wall_s,
        "s_per_iter": wall_s / run.max_iter,
        "final": {k: last.get(f"bbox/{k}", float("nan")) for k in FINAL_KEYS},
        "per_class": {k[len("bbox/AP-") :]: v for k, v in last.items() if k.startswith("bbox/AP-")},
        # As iterations trained: a periodic evaluation is logged at the 0-based iteration that just
        # finished, the one after training at max_iter (Detectron2's trainer.iter after the loop).
        "ap_curve": [[min(m["iteration"] + 1, run.max_iter), m["bbox/AP"]] for m in evals],
        "loss_curve": [[m["iteration"], m["total_loss"]] for m in metrics if "total_loss" in m],
    }
