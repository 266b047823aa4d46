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
    """A distinct (colour, line style, marker) per config. tab10's colours are the most distinct
    matplotlib has; line styles (4) and markers (7) cycle with other periods, so two configs
    differ in at least two of the three up to 20 configs, and in colour or marker up to 70."""
    colours = plt.get_cmap("tab10").colors
    linestyles = ["-", "--", "-.", ":"]
    markers = "osD^v<>"
    return {
        n: {
            "color": colours[i % len(colours)],
            "linestyle": linestyles[i % len(linestyles)],
            "marker": markers[i % len(markers)],
        }
        for i, n in enumerate(names)
    }


def _legend_outside(ax, title=None):
    """The legend right of the axes, so that it never covers the data."""
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=8,
        title=title,
        title_fontsize=8,
        frameon=False,
    )


def _save(fig, path: str):
    fig.savefig(path, dpi=100, bbox_inches="tight")  # "tight": the outside legend is kept
    plt.close(fig)


AP_LABEL = "COCO box AP (%)"


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
        ax.plot(x, values.mean(0), ms=4, lw=1.5, label=f"{name} ({len(runs)})", **styles[name])
        if len(runs) > 1:
            ax.fill_between(
                x, values.min(0), values.max(0), color=styles[name]["color"], alpha=0.15
            )
    ax.set_xlabel("training iteration")
    ax.set_ylabel(f"{AP_LABEL}, mean over seeds (band: min–max)")
    ax.grid(alpha=0.3)
    _legend_outside(ax, title="config (seeds)")
    _save(fig, path)


def ap_bars(groups: Dict[str, List[dict]], path: str):
    """Final AP per config, mean with the seeds' sample std as error bar, in each config's
    colour."""
    names = [n for n, runs in groups.items() if runs]
    stats = [mean_std([r["final"]["AP"] for r in groups[n]]) for n in names]
    styles = config_styles(list(groups))
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.5))
    ax.barh(
        names,
        [m for m, _ in stats],
        xerr=[s or 0 for _, s in stats],
        capsize=3,
        color=[styles[n]["color"] for n in names],
    )
    ax.invert_yaxis()
    ax.set_xlabel(f"{AP_LABEL} after the last iteration, mean ± sample std over seeds")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def ap_vs_step_time(groups: Dict[str, List[dict]], step_s: Dict[str, float], path: str):
    """Final AP (mean ± std over seeds) against the median training step time, one marker and
    colour per config, named in the legend."""
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
            ms=7,
            capsize=3,
            label=name,
        )
    ax.set_xlabel("median training step time (s), interleaved benchmark")
    ax.set_ylabel(f"{AP_LABEL}, mean ± std over seeds")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        _legend_outside(ax, title="config")
    _save(fig, path)


def write_plots(
    out: str, names: Sequence[str], results: Dict[tuple, dict], step_s: Dict[str, float]
) -> List[str]:
    groups = by_config(results, names)
    paths = [os.path.join(out, f) for f in ("ap_vs_iteration.png", "ap.png", "ap_vs_step_time.png")]
    ap_vs_iteration(groups, paths[0])
    ap_bars(groups, paths[1])
    ap_vs_step_time(groups, step_s, paths[2])
    return paths
