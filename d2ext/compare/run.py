"""Executes a comparison plan: the interleaved step-time benchmark, the step-memory probes, then
every (config, seed) run, one at a time or --jobs at once, each a `d2ext.tools.train_net` subprocess
(Detectron2's trainer, COCOEvaluator and metrics.json; see training.py). Every piece writes its result
file last, so an interrupted comparison resumes where it stopped: a run is finished when its
result.json exists.
"""

import json
import os
import queue
import subprocess
import sys
import threading
from typing import Dict

from tqdm import tqdm

from d2ext.utils.progress import progress_options

from .eta import Eta
from .files import read_json, write_json
from .plan import Plan, Run
from .training import core_sets, run_parallel, subprocess_env, train_one


def step_benchmark(
    plan: Plan, rounds: int, steps: int, batch: int, log=print, measure: bool = True
) -> dict:
    """Median step times (and CUDA peak memory) of every config, interleaved in this process;
    reused when <out>/benchmark.json has the same configs and settings (ratios compare only
    numbers measured in one run). measure=False (--report-only): whatever benchmark.json holds,
    or no step times."""
    from d2ext.config import load_config

    from .benchmark import Runner, fixed_batch, interleave

    path = os.path.join(plan.out, "benchmark.json")
    settings = {
        "names": plan.names,
        "rounds": rounds,
        "steps": steps,
        "batch": batch,
        "opts": plan.config_opts,
        "cores": plan.cores,
    }
    if os.path.isfile(path) and (read_json(path)["settings"] == settings or not measure):
        log(f"Reusing the step times of {path}")
        return read_json(path)
    if not measure:
        log(f"No step times: {path} does not exist")
        return {"median_s": {}}
    first = plan.configs[0]
    images = fixed_batch(load_config(first, plan.config_opts[plan.names[0]]), batch)
    runners = [
        Runner(c, images, plan.config_opts[n], plan.device, n)
        for c, n in zip(plan.configs, plan.names)
    ]
    with tqdm(
        total=len(runners) * (1 + rounds * steps),
        desc="step-time benchmark",
        unit="step",
        **progress_options(),
    ) as bar:
        interleave(runners, rounds, steps, on_step=lambda: bar.update())
    result = {
        "settings": settings,
        "median_s": {r.name: r.median for r in runners},
        "times_s": {r.name: r.times for r in runners},
    }
    if plan.device.startswith("cuda"):
        result["memory"] = {r.name: {"peak_mib": r.peak_bytes / 2**20} for r in runners}
    write_json(path, result)
    return result


def memory_probes(
    plan: Plan, batch: int, datasets: dict, log=print, measure: bool = True
) -> Dict[str, dict]:
    """On the CPU: each config's RSS high-water mark over two training steps, in a fresh process
    (<out>/memory/<name>.json, reused when present; measure=False: only those)."""
    out = {}
    for config, name in zip(plan.configs, plan.names):
        path = os.path.join(plan.out, "memory", f"{name}.json")
        if not os.path.isfile(path):
            if not measure:
                continue
            cmd = [
                sys.executable,
                "-m",
                "d2ext.compare.benchmark",
                config,
                str(batch),
                json.dumps(plan.config_opts[name]),
                json.dumps(datasets),
            ]
            proc = subprocess.run(
                cmd, env=subprocess_env(plan.cores), capture_output=True, text=True
            )
            if proc.returncode != 0:
                log(f"memory probe of {name} failed:\n{proc.stderr[-3000:]}")
                continue
            write_json(path, json.loads(proc.stdout.strip().splitlines()[-1]))
        out[name] = read_json(path)
    return out


def execute(
    plan: Plan,
    datasets: dict,
    *,
    rounds: int = 6,
    steps: int = 3,
    batch: int = 8,
    log=print,
    train: bool = True,
    time_log=None,
    jobs: int = 1,
):
    """Benchmark, memory probes, then every unfinished run (train=False: none, the report shows
    what has finished, with the step times and memory measured before, if any), one after another
    in plan order, or `jobs` at a time, each on its own cores // jobs cores (on a GPU they share
    it). `time_log` (a time_log.TimeLog) is kept up to date as runs train.
    Returns (results by run, benchmark, memory, names of failed runs in plan order)."""
    free_cpus = queue.SimpleQueue()
    for cpus in core_sets(plan.cores, jobs):
        free_cpus.put(cpus)
    bench = step_benchmark(plan, rounds, steps, batch, log, measure=train)
    memory = bench.get("memory") or memory_probes(plan, batch, datasets, log, measure=train)
    eta = Eta(bench["median_s"])
    results, failed = {}, []
    for run in plan.runs:
        if run.finished:
            results[(run.name, run.seed)] = read_json(run.result_file)
            eta.add(run.name, results[(run.name, run.seed)]["s_per_iter"])
    todo = [r for r in plan.runs if not r.finished]
    log(f"{len(plan.runs) - len(todo)} of {len(plan.runs)} runs already finished (reused)")
    if not train:
        return results, bench, memory, []
    remaining = {}
    for run in todo:
        remaining[run.name] = remaining.get(run.name, 0) + run.max_iter
    bar = tqdm(
        total=sum(r.max_iter for r in plan.runs),
        initial=sum(r.max_iter for r in plan.runs if r.finished),
        unit="it",
        desc="training",
        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} it [{elapsed}{postfix}]",
        dynamic_ncols=True,
        **progress_options(),
    )
    lock, running, finished, stop = threading.Lock(), [], [], threading.Event()

    def show():  # under the lock; drawn by the next update (in a log file: a line now and then)
        runs = ", ".join(f"{r.name} seed {r.seed}" for r in running)
        bar.set_description("training " + runs, refresh=False)
        bar.set_postfix_str(
            eta.remaining(remaining, jobs, len(todo) - len(finished)), refresh=False
        )

    def train(run: Run):
        cpus = free_cpus.get()
        try:
            if jobs > 1:
                # This thread's affinity, inherited by the run's process (Linux: pid 0 = the thread).
                os.sched_setaffinity(0, cpus)
            with lock:
                running.append(run)
                show()

            def on_iter(n):
                with lock:
                    remaining[run.name] -= n
                    bar.update(n)
                    show()
                    if time_log:
                        time_log.update()

            result = train_one(
                run, datasets, len(cpus) if jobs > 1 else plan.cores, on_iter, stop=stop
            )
        finally:
            free_cpus.put(cpus)
        with lock:
            running.remove(run)
            finished.append(run)
            if result is None:
                failed.append(run)
            else:
                results[(run.name, run.seed)] = result
                eta.add(run.name, result["s_per_iter"])
            if time_log:
                time_log.update(runs_trained=len(finished) - len(failed), force=True)
            show()

    with lock:
        show()
    if jobs == 1:
        for run in todo:
            train(run)
    else:
        run_parallel(train, todo, jobs, stop)
    bar.close()
    return results, bench, memory, [f"{r.name} seed {r.seed}" for r in plan.runs if r in failed]
