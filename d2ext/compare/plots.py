"""The comparison's PNG plots (matplotlib, no display needed): AP over iterations with the seed
spread, final AP with error bars, AP against step time."""

import os
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: works without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .report import by_config, mean_std  # noqa: E402


def config_styles(names: Sequence[str]) -> Dict[str, dict]:
    """A distinct (colour, marker) per config: matplotlib's default cycle has 10 colours, so a
    13-config comparison drew two configs alike. tab20 gives 20 colours; markers vary beyond."""
    colours = plt.get_cmap("tab20").colors
    markers = "osD^v<>"
    return {
        n: {
            "color": colours[i % len(colours)],
            "marker": markers[(i // len(colours)) % len(markers)],
        }
        for i, n in enumerate(names)
    }


def ap_vs_iteration(groups: Dict[str, List[dict]], path: str):
    """Mean AP at each evaluated iteration, the band spanning the seeds' min..max."""
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = config_styles(list(groups))
    for name, runs in groups.items():
        curves = [dict((int(i), ap) for i, ap in r["ap_curve"]) for r in runs]
        iters = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not iters:
            continue
        values = np.array([[c[i] for i in iters] for c in curves])
        x = np.array(iters)
        ax.plot(x, values.mean(0), ms=3, label=f"{name} ({len(runs)})", **styles[name])
        if len(runs) > 1:
            ax.fill_between(x, values.min(0), values.max(0), color=styles[name]["color"], alpha=0.2)
    ax.set_xlabel("iterations trained")
    ax.set_ylabel("AP (mean over seeds; band: min..max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ap_bars(groups: Dict[str, List[dict]], path: str):
    names = [n for n, runs in groups.items() if runs]
    stats = [mean_std([r["final"]["AP"] for r in groups[n]]) for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.5))
    ax.barh(
        names, [m for m, _ in stats], xerr=[s or 0 for _, s in stats], capsize=3, color="tab:blue"
    )
    ax.invert_yaxis()
    ax.set_xlabel("AP (mean ± sample std over seeds)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ap_vs_step_time(groups: Dict[str, List[dict]], step_s: Dict[str, float], path: str):
    fig, ax = plt.subplots(figsize=(7, 5))
    styles = config_styles(list(groups))
    for name, runs in groups.items():
        if not runs or name not in step_s:
            continue
        mean, std = mean_std([r["final"]["AP"] for r in runs])
        ax.errorbar(
            step_s[name],
            mean,
            yerr=std or 0,
            fmt=styles[name]["marker"],
            color=styles[name]["color"],
            capsize=3,
        )
        ax.annotate(
            name, (step_s[name], mean), fontsize=7, xytext=(4, 2), textcoords="offset points"
        )
    ax.set_xlabel("median training step time, s (interleaved benchmark)")
    ax.set_ylabel("AP (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(
    out: str, names: Sequence[str], results: Dict[tuple, dict], step_s: Dict[str, float]
) -> List[str]:
    groups = by_config(results, names)
    paths = [os.path.join(out, f) for f in ("ap_vs_iteration.png", "ap.png", "ap_vs_step_time.png")]
    ap_vs_iteration(groups, paths[0])
    ap_bars(groups, paths[1])
    ap_vs_step_time(groups, step_s, paths[2])
    return paths
