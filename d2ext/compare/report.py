"""<out>/comparison.md from the run results: mean ± std over seeds per config, step time and
memory as ratios to the first config, per-class AP, the settings and the exact command."""

import math
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from .results import FINAL_KEYS


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (n - 1: an unbiased variance from a few seeds); std is
    None for a single value. NaNs (e.g. APs of a dataset without small objects) are skipped."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def fmt(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "–"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def separation(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """(mean(a) - mean(b)) in standard errors of that difference, sqrt(s_a²/n_a + s_b²/n_b) (as
    Welch's t); None with fewer than two seeds on a side or no spread at all."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if sa is None or sb is None:
        return None
    na, nb = (len([v for v in x if not math.isnan(v)]) for x in (a, b))
    se = math.sqrt(sa**2 / na + sb**2 / nb)
    return (ma - mb) / se if se > 0 else None


def noise_lines(
    groups: Dict[str, List[dict]], names: Sequence[str], limit: float = 2.0
) -> List[str]:
    """The seed spread of each config and the pairs whose AP difference is within `limit`
    standard errors: what this many seeds cannot tell apart."""
    aps = {n: [r["final"]["AP"] for r in groups[n]] for n in names}
    aps = {n: v for n, v in aps.items() if mean_std(v)[1] is not None}  # two or more AP values
    if not aps:
        return []
    spread = ", ".join(f"`{n}` {mean_std(v)[1]:.1f}" for n, v in aps.items())
    close = []
    for i, a in enumerate(aps):
        for b in list(aps)[i + 1 :]:
            sep = separation(aps[a], aps[b])
            if sep is not None and abs(sep) < limit:
                diff = mean_std(aps[a])[0] - mean_std(aps[b])[0]
                close.append(f"`{a}` − `{b}` {diff:+.1f} ({abs(sep):.1f}σ)")
    lines = [
        f"Seed spread (sample std of AP): {spread}.",
        f"σ: the standard error of a difference of means, sqrt(s₁²/n₁ + s₂²/n₂). A difference of "
        f"about {limit:g}σ or more stands out from the seed spread; with this few seeds that is a rule "
        f"of thumb, not a significance test. Pairs within {limit:g}σ (not told apart by these seeds): "
        + ("; ".join(close) if close else "none")
        + ".",
        "",
    ]
    return lines


def by_config(results: Dict[tuple, dict], names: Sequence[str]) -> Dict[str, List[dict]]:
    """The results of each config, in plan order, seeds sorted."""
    return {n: [results[k] for k in sorted(results) if k[0] == n] for n in names}


def ratio(value, base) -> str:
    if value is None or base is None or not base:
        return "–"
    return f"{value / base:.2f}x"


def memory_mib(memory: dict, name: str) -> Optional[float]:
    entry = memory.get(name)
    if not entry:
        return None
    return entry.get("peak_rss_mib", entry.get("peak_mib"))


def write_report(
    path: str,
    *,
    names: Sequence[str],
    results: Dict[tuple, dict],
    bench: dict,
    memory: dict,
    settings: dict,
    command: str,
    wall_s: Optional[float] = None,
    failed: Sequence[str] = (),
    plots: Sequence[str] = (),
    untrained: Sequence[str] = (),
    time_it_took: str = "",
) -> str:
    groups = by_config(results, names)
    base = names[0]
    step = bench.get("median_s", {})
    base_ap = mean_std([r["final"]["AP"] for r in groups[base]])[0] if groups[base] else None
    on_cuda = str(settings.get("device", "cpu")).startswith("cuda")
    mem_label = "peak step memory MiB (CUDA allocated)" if on_cuda else "peak RSS MiB (+ step)"
    lines = [
        "# Method comparison",
        "",
        f"Command: `{command}`",
        "",
        "Settings: " + ", ".join(f"{k} `{v}`" for k, v in settings.items() if k != "configs") + ".",
        f"Seeds per config: {len(settings.get('seeds', []))}. Values are mean ± sample standard deviation "
        "over seeds (no ± with one seed); AP from Detectron2's COCOEvaluator on the test set after the "
        "last iteration.",
    ]
    if time_it_took:
        lines.append(time_it_took)
    if wall_s is not None:
        lines.append(f"Wall time of this invocation: {wall_s / 3600:.2f} h.")
    lines += [
        "",
        f"| config | seeds | AP | AP50 | AP75 | APs | APm | APl | AP − {base} | step s | step vs {base} "
        f"| {mem_label} | memory vs {base} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        runs = groups[name]
        cells = [fmt([r["final"][k] for r in runs]) for k in FINAL_KEYS]
        ap = mean_std([r["final"]["AP"] for r in runs])[0] if runs else float("nan")
        diff = "–" if base_ap is None or math.isnan(ap) or name == base else f"{ap - base_ap:+.1f}"
        sep = separation([r["final"]["AP"] for r in runs], [r["final"]["AP"] for r in groups[base]])
        if diff != "–" and sep is not None:
            diff += f" ({abs(sep):.1f}σ)"
        s = step.get(name)
        mem = memory_mib(memory, name)
        lines.append(
            f"| `{name}` | {len(runs)} | "
            + " | ".join(cells)
            + f" | {diff} | "
            + (f"{s:.3f}" if s is not None else "–")
            + f" | {ratio(s, step.get(base))} | "
            + (f"{mem:.0f}" if mem is not None else "–")
            + (
                f" (+{memory[name]['step_increase_mib']:.0f})"
                if "step_increase_mib" in memory.get(name, {})
                else ""
            )
            + f" | {ratio(mem, memory_mib(memory, base))} |"
        )
    lines += [""] + noise_lines(groups, names)
    lines += [
        f"Step time: median of the interleaved benchmark ({bench.get('settings', {}).get('rounds')} rounds × "
        f"{bench.get('settings', {}).get('steps')} steps per config on one fixed batch of "
        f"{bench.get('settings', {}).get('batch')} training images, forward + backward + SGD update, the "
        "configs taking turns so that load changes hit all alike); absolute seconds depend on the "
        "machine's load, the ratios less so.",
        "Memory: "
        + (
            "torch.cuda.max_memory_allocated over the benchmark's steps."
            if on_cuda
            else "RSS high-water mark of one training step on that batch (after a warm-up step) in a "
            "fresh process that built only that model; it includes the interpreter, torch and the "
            "model, several hundred MiB common to all; (+N): its rise over the RSS before the step."
        ),
        "",
    ]
    classes = sorted({c for runs in groups.values() for r in runs for c in r["per_class"]})
    if classes:
        lines += [
            "Per-class AP:",
            "",
            "| config | " + " | ".join(classes) + " |",
            "|---|" + "---:|" * len(classes),
        ]
        for name in names:
            lines.append(
                f"| `{name}` | "
                + " | ".join(
                    fmt([r["per_class"][c] for r in groups[name] if c in r["per_class"]])
                    for c in classes
                )
                + " |"
            )
        lines.append("")
    if failed:
        lines += [
            "Failed runs (not in the table; rerun the command to retry them): " + ", ".join(failed),
            "",
        ]
    if untrained:
        lines += [
            "Not trained yet (--report-only; the table has the finished seeds): "
            + ", ".join(untrained),
            "",
        ]
    missing = [n for n in names if not groups[n]]
    if missing:
        lines += ["No finished run: " + ", ".join(f"`{n}`" for n in missing), ""]
    for plot in plots:
        lines.append(
            f"![{os.path.splitext(os.path.basename(plot))[0]}]({os.path.relpath(plot, os.path.dirname(path))})"
        )
    lines += ["", "Configs: " + ", ".join(f"`{c}`" for c in settings.get("configs", [])), ""]
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text)
    return text
