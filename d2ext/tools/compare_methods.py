"""
Trains and evaluates configs x seeds at one schedule on one dataset and writes a report with the
seed spread, step time and memory ratios, and plots (d2ext/compare/):

    d2ext-compare                                           # every tiny config + baselines, 3 seeds
    d2ext-compare --configs atss_R_18_FPN_tiny gfl_R_18_FPN_tiny --seeds 5
    d2ext-compare --coco-dataset mine_train ann/train.json img/train \
        --coco-dataset mine_val ann/val.json img/val --train-dataset mine_train --test-dataset mine_val

Output in --out: comparison.md, ap_vs_iteration.png, ap.png, ap_vs_step_time.png, benchmark.json,
memory/, runs/<config>/seed<seed>/ (train_net's output, result.json). Rerunning the command
reuses every finished run (one whose result.json exists) and trains the others. From a checkout:
python tools/compare_methods.py (same arguments).
"""

import argparse
import os
import shlex
import sys
import time

import torch

import d2ext  # noqa: F401  (registers the models and the bundled dataset)
from d2ext.compare.plan import DEFAULT_CONFIGS, DEFAULT_TEST, DEFAULT_TRAIN, make_plan
from d2ext.compare.plots import write_plots
from d2ext.compare.report import write_report
from d2ext.compare.run import execute
from d2ext.compare.time_log import TimeLog, read_entries, summary
from d2ext.data.registration import add_registration_arguments, register_from_args
from d2ext.errors import ConfigError
from d2ext.tools.cli import add_debug_argument, command


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=DEFAULT_CONFIGS,
        help="yaml/lazy files or names of d2ext's Synthetic/ configs; the first is the ratios' reference",
    )
    parser.add_argument("--seeds", type=int, default=3, help="runs per config (SEED 42, 43, ...)")
    parser.add_argument("--first-seed", type=int, default=42)
    parser.add_argument(
        "--max-iter",
        type=int,
        default=500,
        help="shared schedule; LR steps and warmup scale with it",
    )
    parser.add_argument(
        "--eval-points",
        type=int,
        default=5,
        help="evaluations per run for the AP-vs-iteration plot "
        "(TEST.EVAL_PERIOD = max_iter / this; 0: at the end only)",
    )
    parser.add_argument("--train-dataset", default=DEFAULT_TRAIN)
    parser.add_argument("--test-dataset", default=DEFAULT_TEST)
    add_registration_arguments(parser)  # --coco-dataset, --voc-dataset, --import
    parser.add_argument(
        "--num-classes", type=int, default=None, help="default: the train set's thing_classes"
    )
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="test score threshold for every method (default: each config's)",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="CPU cores to use: the process and its runs are bound to this many, with as many torch threads",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once, each bound to --cores / --jobs of the cores (on a GPU they share it)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--rounds", type=int, default=6, help="step-time benchmark: round-robin rounds"
    )
    parser.add_argument(
        "--steps", type=int, default=3, help="step-time benchmark: steps per config and round"
    )
    parser.add_argument("--batch", type=int, default=8, help="step-time / memory benchmark batch")
    parser.add_argument("--out", default="output/compare_methods")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: the report and plots of the runs finished so far",
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


@command
def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    # At most --cores cores for this process and the runs it starts (they inherit the binding).
    available = sorted(os.sched_getaffinity(0))
    if not 1 <= args.cores <= len(available):
        raise ConfigError(f"--cores {args.cores}: this process may use 1 to {len(available)} CPUs")
    os.sched_setaffinity(0, available[: args.cores])
    torch.set_num_threads(args.cores)
    datasets = register_from_args(args)  # and again in every run's process
    plan = make_plan(
        args.configs,
        seeds=args.seeds,
        out=args.out,
        max_iter=args.max_iter,
        eval_points=args.eval_points,
        train_dataset=args.train_dataset,
        test_dataset=args.test_dataset,
        num_classes=args.num_classes,
        score_thresh=args.score_thresh,
        cores=args.cores,
        device=args.device,
        first_seed=args.first_seed,
        jobs=args.jobs,
    )
    os.makedirs(plan.out, exist_ok=True)
    command_line = shlex.join([os.path.basename(sys.argv[0])] + list(argv))
    time_log = None if args.report_only else TimeLog(plan.out, command_line, args.device)
    try:
        results, bench, memory, failed = execute(
            plan,
            datasets,
            rounds=args.rounds,
            steps=args.steps,
            batch=args.batch,
            train=not args.report_only,
            time_log=time_log,
            jobs=args.jobs,
        )
    finally:  # interrupted too: the time spent counts
        if time_log:
            time_log.update(force=True)
    plots = write_plots(plan.out, plan.names, results, bench["median_s"])
    report = os.path.join(plan.out, "comparison.md")
    untrained = (
        [f"{r.name} seed {r.seed}" for r in plan.runs if not r.finished] if args.report_only else []
    )
    settings = dict(plan.settings(), **({"jobs": args.jobs} if args.jobs > 1 else {}))
    write_report(
        report,
        names=plan.names,
        results=results,
        bench=bench,
        memory=memory,
        settings=settings,
        command=command_line,
        wall_s=time.perf_counter() - start,
        failed=failed,
        plots=plots,
        untrained=untrained,
        time_it_took=summary(read_entries(plan.out)),
    )
    print(
        f"Wrote {report}"
        + (f"; {len(failed)} run(s) failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
