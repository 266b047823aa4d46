"""
What test-time augmentation and SWA change, per method, on the models a comparison trained
(tools/compare_methods.py --out OUT): each finished run (OUT/runs/<config>/seed<s>/) is

- evaluated again with TTA (``--tta``): its model_final.pth, plain and with TEST.AUG (lazy:
  test_aug) at --min-sizes with flip, merged by --merge, in one ``--eval-only`` process;
- continued with SWA (``--swa CONFIG ...``, yaml configs): --resume from a copy of the run with
  SOLVER.SWA.* (--cycles cycles of --cycle-iters iterations after the run's schedule), the
  averaged model evaluated at the end and compared with the run's own final AP.

Prints a table per measure (mean ± sample std over the seeds of the per-seed AP, and of the
per-seed change) and writes it to OUT/tta_swa.md; each evaluation's log and output stay in
OUT/tta/ and OUT/swa/, and finished ones are reused when the command is run again.

    python tools/compare_methods.py --train-dataset d2ext_photos_train \\
        --test-dataset d2ext_photos_val --max-iter 240 --seeds 2 --out output/compare_photos
    python tools/tta_swa_effect.py --out output/compare_photos --tta \\
        --swa atss_R_18_FPN_tiny gfl_R_18_FPN_tiny vfnet_R_18_FPN_tiny --cycle-iters 30
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
from statistics import mean, stdev
from typing import Dict, List, Optional

import d2ext  # noqa: F401  (registers d2ext's datasets, like the comparison's runs)
from d2ext.compare.files import read_json, read_metrics
from d2ext.compare.training import subprocess_env
from d2ext.engine.swa import SWA_METRICS_FILENAME
from d2ext.errors import DataError
from d2ext.tools.cli import command as cli_command

# d2ext.tools.train_net's evaluation in a process of its own, its results dict written as json.
EVALUATE = (
    "import json, sys\n"
    "from d2ext.data.registration import register_datasets\n"
    "from d2ext.tools.train_net import get_parser, run\n"
    "register_datasets(**json.loads(sys.argv[2]))\n"
    "results = run(get_parser().parse_args(sys.argv[3:]))\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump(results, f)\n"
)


def finished_runs(out: str, names: Optional[List[str]] = None) -> List[dict]:
    """The result.json of every finished run of the comparison in `out` (of `names` if given)."""
    runs = []
    for path in sorted(glob.glob(os.path.join(out, "runs", "*", "seed*", "result.json"))):
        result = read_json(path)
        if names is None or result["name"] in names:
            result["output_dir"] = os.path.dirname(path)
            check_command(result["command"], path)
            runs.append(result)
    if not runs:
        raise DataError(
            f"{out}: no finished run of tools/compare_methods.py"
            + (f" of {names}" if names else "")
        )
    return runs


def check_command(command: List[str], path: str) -> None:
    """A run's command as compare_methods writes it: the datasets it registered (json: COCO and
    VOC folders), then --config-file FILE and config overrides only. Anything else is refused
    (a flag such as an --allow-unsafe-* opt-in, a module to import): a result.json is a file like
    any other and opts into nothing."""
    try:
        datasets = json.loads(command[0])
    except (IndexError, TypeError, ValueError):
        datasets = None
    if (
        not isinstance(datasets, dict)
        or set(datasets) - {"coco", "voc", "modules"}
        or datasets.get("modules")
        or command[1:2] != ["--config-file"]
        or any(a.startswith("--") for a in command[3:])
    ):
        raise DataError(
            f"{path}: 'command' is not the datasets json (no modules) followed by "
            "'--config-file FILE' and config overrides"
        )


def run_logged(command: List[str], log_path: str, cores: int) -> str:
    with open(log_path, "w") as log:
        proc = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(cores)
        )
    with open(log_path) as log:
        text = log.read()
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}; log {log_path}:\n{text[-3000:]}")
    return text


def train_net_args(command: List[str], flag: str, opts: List[str]) -> List[str]:
    """The run's ``--config-file C <overrides>`` with `flag` and more overrides."""
    return [*command[1:3], flag, *command[3:], *opts]  # flags before the overrides


def tta_ap(run: dict, out: str, min_sizes: List[int], merge: str, cores: int) -> Dict[str, float]:
    """{"plain": AP, "tta": AP} of the run's final model, from one --eval-only process."""
    folder = os.path.join(out, "tta", run["name"], f"seed{run['seed']}")
    done = os.path.join(folder, "ap.json")
    if os.path.isfile(done):
        return read_json(done)
    os.makedirs(folder, exist_ok=True)
    command = run["command"]  # datasets json, --config-file C, the run's overrides
    weights = os.path.join(run["output_dir"], "model_final.pth")
    if command[2].endswith(".py"):
        sizes = "[" + ",".join(str(s) for s in min_sizes) + "]"
        extra = [
            f"train.init_checkpoint={weights}",
            f"train.output_dir={folder}",
            "test_aug.enabled=True",
            f"test_aug.min_sizes={sizes}",
            f"test_aug.merge={merge}",
        ]
    else:
        sizes = "(" + ",".join(str(s) for s in min_sizes) + ")"
        extra = ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", folder, "TEST.AUG.ENABLED", "True"]
        extra += ["TEST.AUG.MIN_SIZES", sizes, "TEST.AUG.MERGE", merge]
    results_file = os.path.join(folder, "results.json")
    args = train_net_args(command, "--eval-only", extra)
    run_logged(
        [sys.executable, "-c", EVALUATE, results_file, command[0], *args],
        os.path.join(folder, "log.txt"),
        cores,
    )
    results = read_json(results_file)
    result = {"plain": results["bbox"]["AP"], "tta": results["bbox_TTA"]["AP"]}
    with open(done, "w") as f:
        json.dump(result, f)
    return result


def swa_ap(run: dict, out: str, cycles: int, cycle_iters: int, cores: int) -> Dict[str, float]:
    """{"plain": the run's final AP, "swa": AP of the SWA average, "last_cycle": AP of the
    trained (not averaged) weights at the end of the SWA cycles, the same extra training without
    the average} after resuming a copy of the run with SOLVER.SWA (yaml configs)."""
    if run["command"][2].endswith(".py"):
        raise ValueError(f"{run['name']}: --swa takes yaml configs (lazy ones set train.swa)")
    folder = os.path.join(out, "swa", run["name"], f"seed{run['seed']}")
    done = os.path.join(folder, "ap.json")
    if os.path.isfile(done):
        return read_json(done)
    if os.path.isdir(folder):  # an unfinished try: start it again from the run's final model
        shutil.rmtree(folder)
    os.makedirs(folder)
    shutil.copy(os.path.join(run["output_dir"], "model_final.pth"), folder)
    with open(os.path.join(folder, "last_checkpoint"), "w") as f:
        f.write("model_final.pth")
    swa = ["SOLVER.SWA.ENABLED", "True", "SOLVER.SWA.NUM_CYCLES", str(cycles)]
    swa += ["SOLVER.SWA.CYCLE_ITERS", str(cycle_iters), "OUTPUT_DIR", folder]
    # As the comparison's runs: d2ext.tools.train_net with the datasets d2ext registers.
    args = train_net_args(run["command"], "--resume", swa)
    command = [sys.executable, "-m", "d2ext.compare.training", run["command"][0], *args]
    run_logged(command, os.path.join(folder, "log.txt"), cores)
    result = {
        "plain": run["final"]["AP"],
        "swa": _last_metric(folder, "swa/bbox/AP"),
        "last_cycle": _last_metric(folder, "bbox/AP"),
    }
    # The average after each cycle (SOLVER.SWA.EVAL_PERIOD 1, the default).
    by_cycle = os.path.join(folder, SWA_METRICS_FILENAME)
    if os.path.isfile(by_cycle):
        result["by_cycle"] = [m["swa/bbox/AP"] for m in read_metrics(by_cycle)]
    with open(done, "w") as f:
        json.dump(result, f)
    return result


def _last_metric(folder: str, key: str) -> float:
    """The last value of `key` in a run's metrics.json (swa/bbox/AP: the SWA average's, bbox/AP:
    the trained weights')."""
    values = [m[key] for m in read_metrics(os.path.join(folder, "metrics.json")) if key in m]
    if not values:
        raise RuntimeError(f"{folder}/metrics.json has no {key}: that evaluation did not run")
    return values[-1]


def spread(values: List[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "–"
    return f"{mean(values):.1f} ± {stdev(values):.1f}"


def table(title: str, columns: Dict[str, str], per_config: Dict[str, List[dict]]) -> List[str]:
    """Mean ± std over seeds of the run's AP, of each measured AP in `columns` ({key: heading})
    and of its per-seed change from the run's AP."""
    headings = [h for c in columns.values() for h in (c, f"change ({c})")]
    lines = [f"### {title}", "", "| config | seeds | AP | " + " | ".join(headings) + " |"]
    lines.append("|---|---:|---:|" + "---:|" * len(headings))
    for name, results in per_config.items():
        plain = [r["plain"] for r in results]
        cells = [len(results), spread(plain)]
        for key in columns:
            other = [r[key] for r in results]
            cells += [spread(other), spread([o - p for o, p in zip(other, plain)])]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    return lines + [""]


def average_effect_table(per_config: Dict[str, List[dict]]) -> List[str]:
    """Mean ± std over seeds of the SWA average's AP minus that of the same iterations without
    the average: the average's own share of SWA's change."""
    lines = ["### SWA: the average's own effect", ""]
    lines += ["| config | seeds | SWA average − same iterations, no average |", "|---|---:|---:|"]
    for name, results in per_config.items():
        effect = spread([r["swa"] - r["last_cycle"] for r in results])
        lines.append(f"| {name} | {len(results)} | {effect} |")
    return lines + [""]


def by_cycle_table(per_config: Dict[str, List[dict]], cycles: int) -> List[str]:
    """Mean ± std over seeds of the SWA average's AP after each cycle, for the configs whose
    every seed has it."""
    rows = {
        name: results
        for name, results in per_config.items()
        if all(len(r.get("by_cycle", [])) == cycles for r in results)
    }
    if not rows:
        return []
    heads = [f"after {k}" for k in range(1, cycles + 1)]
    lines = ["### SWA: AP of the average after each cycle", ""]
    lines += ["| config | seeds | AP | " + " | ".join(heads) + " |"]
    lines += ["|---|---:|---:|" + "---:|" * cycles]
    for name, results in rows.items():
        cells = [len(results), spread([r["plain"] for r in results])]
        cells += [spread([r["by_cycle"][k] for r in results]) for k in range(cycles)]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    return lines + [""]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="a tools/compare_methods.py output folder")
    parser.add_argument("--configs", nargs="+", help="config names (default: every finished run)")
    parser.add_argument("--tta", action="store_true", help="evaluate each run with TTA")
    parser.add_argument(
        "--min-sizes", nargs="+", type=int, default=[224, 288, 352], help="TTA short sides"
    )
    parser.add_argument("--merge", default="nms", choices=["nms", "vote", "soft-vote"])
    parser.add_argument(
        "--swa", nargs="+", default=[], metavar="CONFIG", help="configs to continue with SWA"
    )
    parser.add_argument("--cycles", type=int, default=4, help="SWA cycles")
    parser.add_argument("--cycle-iters", type=int, default=30, help="iterations per SWA cycle")
    parser.add_argument("--cores", type=int, default=2)
    return parser.parse_args(argv)


@cli_command
def main(argv=None):
    args = parse_args(argv)
    lines = [f"Runs of `{args.out}`.", ""]
    if args.tta:
        per_config: Dict[str, List[Dict[str, float]]] = {}
        for run in finished_runs(args.out, args.configs):
            result = tta_ap(run, args.out, args.min_sizes, args.merge, args.cores)
            print(f"TTA {run['name']} seed {run['seed']}: {result}", flush=True)
            per_config.setdefault(run["name"], []).append(result)
        sizes = ", ".join(str(s) for s in args.min_sizes)
        lines += table(
            f"TTA: short sides {sizes} x flip, merge {args.merge}", {"tta": "TTA"}, per_config
        )
    if args.swa:
        per_config = {}
        for run in finished_runs(args.out, args.swa):
            result = swa_ap(run, args.out, args.cycles, args.cycle_iters, args.cores)
            print(f"SWA {run['name']} seed {run['seed']}: {result}", flush=True)
            per_config.setdefault(run["name"], []).append(result)
        title = f"SWA: {args.cycles} cycles x {args.cycle_iters} iterations after the schedule"
        columns = {"swa": "SWA average", "last_cycle": "same iterations, no average"}
        lines += table(title, columns, per_config)
        lines += average_effect_table(per_config)
        lines += by_cycle_table(per_config, args.cycles)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "tta_swa.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
