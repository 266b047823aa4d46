"""Executes a comparison plan: the interleaved step-time benchmark, the step-memory probes, then
every (config, seed) run, one at a time or --jobs at once, each a `d2ext.tools.train_net` subprocess
(Detectron2's trainer, COCOEvaluator and metrics.json). Every piece writes its result file last, so an
interrupted comparison resumes where it stopped: a run is finished when its result.json exists.
"""
import json
import math
import os
import queue
import runpy
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Dict, List, Optional

from tqdm import tqdm

import d2ext

from .plan import Plan, Run

# The folder d2ext is imported from (site-packages, or a checkout): the runs import the same d2ext.
D2EXT_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(d2ext.__file__)))
FINAL_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def write_json(path, data):
    """Written to a temporary name and renamed: a result file is whole or absent."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def subprocess_env(cores: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(cores)
    # The subprocess imports the d2ext this process runs, whatever else is installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (D2EXT_PARENT, env.get("PYTHONPATH")) if p)
    return env


def read_metrics(path: str) -> List[dict]:
    """Detectron2's JSONWriter output: one json object per line."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def summarize(run: Run, metrics: List[dict], wall_s: float) -> dict:
    """The result of a finished run from its metrics.json: the last evaluation (AP, AP50, ...,
    per-class AP as COCOEvaluator names them "AP-<class>") and the curves."""
    evals = [m for m in metrics if "bbox/AP" in m]
    if not evals:
        raise RuntimeError(f"{run.output_dir}/metrics.json has no bbox/AP: the evaluation did not run")
    last = evals[-1]
    return {
        "config": run.config, "name": run.name, "seed": run.seed, "max_iter": run.max_iter,
        "wall_s": wall_s, "s_per_iter": wall_s / run.max_iter,
        "final": {k: last.get(f"bbox/{k}", float("nan")) for k in FINAL_KEYS},
        "per_class": {k[len("bbox/AP-"):]: v for k, v in last.items() if k.startswith("bbox/AP-")},
        # As iterations trained: a periodic evaluation is logged at the 0-based iteration that just
        # finished, the one after training at max_iter (Detectron2's trainer.iter after the loop).
        "ap_curve": [[min(m["iteration"] + 1, run.max_iter), m["bbox/AP"]] for m in evals],
        "loss_curve": [[m["iteration"], m["total_loss"]] for m in metrics if "total_loss" in m],
    }


def train_command(run: Run, datasets: dict) -> List[str]:
    return [sys.executable, "-m", "d2ext.compare.run", json.dumps(datasets),
            "--config-file", run.config, *run.opts]


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
        ratios = [sum(v) / len(v) / self.step_s[n] for n, v in self.per_iter.items() if n in self.step_s]
        if ratios and name in self.step_s:
            return self.step_s[name] * sum(ratios) / len(ratios), True
        return self.step_s.get(name, float("nan")), False

    def remaining(self, todo: Dict[str, int], jobs: int = 1, runs_left: Optional[int] = None) -> str:
        """The remaining time, the work divided among min(jobs, runs left) concurrent runs."""
        total, measured = 0.0, True
        for name, iters in todo.items():
            s, m = self.seconds_per_iter(name)
            total, measured = total + s * iters, measured and m
        if math.isnan(total):
            return "ETA ?"
        parallel = min(jobs, runs_left or jobs)
        return "ETA " + ("" if measured else ">") + tqdm.format_interval(total / parallel)


def step_benchmark(plan: Plan, rounds: int, steps: int, batch: int, log=print, measure: bool = True) -> dict:
    """Median step times (and CUDA peak memory) of every config, interleaved in this process;
    reused when <out>/benchmark.json has the same configs and settings (ratios compare only
    numbers measured in one run). measure=False (--report-only): whatever benchmark.json holds,
    or no step times."""
    from .benchmark import Runner, fixed_batch, interleave
    from d2ext.config import load_config

    path = os.path.join(plan.out, "benchmark.json")
    settings = {"names": plan.names, "rounds": rounds, "steps": steps, "batch": batch,
                "opts": plan.config_opts, "cores": plan.cores}
    if os.path.isfile(path) and (read_json(path)["settings"] == settings or not measure):
        log(f"Reusing the step times of {path}")
        return read_json(path)
    if not measure:
        log(f"No step times: {path} does not exist")
        return {"median_s": {}}
    first = plan.configs[0]
    images = fixed_batch(load_config(first, plan.config_opts[plan.names[0]]), batch)
    runners = [Runner(c, images, plan.config_opts[n], plan.device, n) for c, n in zip(plan.configs, plan.names)]
    with tqdm(total=len(runners) * (1 + rounds * steps), desc="step-time benchmark", unit="step") as bar:
        interleave(runners, rounds, steps, on_step=lambda: bar.update())
    result = {"settings": settings, "median_s": {r.name: r.median for r in runners},
              "times_s": {r.name: r.times for r in runners}}
    if plan.device.startswith("cuda"):
        result["memory"] = {r.name: {"peak_mib": r.peak_bytes / 2**20} for r in runners}
    write_json(path, result)
    return result


def memory_probes(plan: Plan, batch: int, datasets: dict, log=print, measure: bool = True) -> Dict[str, dict]:
    """On the CPU: each config's RSS high-water mark over two training steps, in a fresh process
    (<out>/memory/<name>.json, reused when present; measure=False: only those)."""
    out = {}
    for config, name in zip(plan.configs, plan.names):
        path = os.path.join(plan.out, "memory", f"{name}.json")
        if not os.path.isfile(path):
            if not measure:
                continue
            cmd = [sys.executable, "-m", "d2ext.compare.benchmark", config, str(batch),
                   json.dumps(plan.config_opts[name]), json.dumps(datasets)]
            proc = subprocess.run(cmd, env=subprocess_env(plan.cores), capture_output=True, text=True)
            if proc.returncode != 0:
                log(f"memory probe of {name} failed:\n{proc.stderr[-3000:]}")
                continue
            write_json(path, json.loads(proc.stdout.strip().splitlines()[-1]))
        out[name] = read_json(path)
    return out


def train_one(run: Run, datasets: dict, cores: int, on_iter=None, poll_s: float = 2.0,
              stop: Optional[threading.Event] = None) -> Optional[dict]:
    """Trains and evaluates one run in a subprocess; returns its result (also in result.json), or
    None when it failed (the tail of its log is printed). The subprocess inherits the calling
    thread's CPU affinity. An unfinished run starts afresh: Detectron2's JSONWriter appends, so a
    stale metrics.json would mix two runs. Interrupted (Ctrl-C, an error, `stop` set), it kills the
    run and raises."""
    if os.path.isdir(run.output_dir):
        shutil.rmtree(run.output_dir)
    os.makedirs(run.output_dir)
    log_path = os.path.join(run.output_dir, "train_log.txt")
    metrics_path = os.path.join(run.output_dir, "metrics.json")
    start, done = time.perf_counter(), 0
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(train_command(run, datasets), stdout=log_file, stderr=subprocess.STDOUT,
                                env=subprocess_env(cores))
        try:
            while proc.poll() is None:
                time.sleep(poll_s)
                if stop is not None and stop.is_set():
                    raise RuntimeError(f"{run.name} seed {run.seed} stopped: another run raised")
                metrics = read_metrics(metrics_path)
                if metrics and on_iter:
                    now = min(max(m.get("iteration", 0) for m in metrics) + 1, run.max_iter)
                    on_iter(now - done)
                    done = now
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    wall = time.perf_counter() - start
    if on_iter:
        on_iter(run.max_iter - done)
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"exit status {proc.returncode}")
        result = summarize(run, read_metrics(metrics_path), wall)
    except Exception as e:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        tqdm.write(f"FAILED {run.name} seed {run.seed} ({e}); log {log_path}:\n{tail}")
        return None
    result["command"] = train_command(run, datasets)[3:]
    result["cores"] = cores
    write_json(run.result_file, result)
    return result


def core_sets(cores: int, jobs: int) -> List[List[int]]:
    """This process's first `cores` CPUs split into `jobs` disjoint sets of cores // jobs."""
    cpus = sorted(os.sched_getaffinity(0))
    if cores > len(cpus):
        raise ValueError(f"--cores {cores}: this process may use {len(cpus)} CPUs ({cpus})")
    if not 1 <= jobs <= cores:
        raise ValueError(f"--jobs {jobs}: needs 1 to --cores ({cores}) concurrent runs, each on its own cores")
    per = cores // jobs
    return [cpus[i * per:(i + 1) * per] for i in range(jobs)]


def execute(plan: Plan, datasets: dict, rounds: int = 6, steps: int = 3, batch: int = 8, log=print,
            train: bool = True, time_log=None, jobs: int = 1):
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
    bar = tqdm(total=sum(r.max_iter for r in plan.runs), initial=sum(r.max_iter for r in plan.runs if r.finished),
               unit="it", desc="training", bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} it "
               "[{elapsed}{postfix}]", dynamic_ncols=True)
    lock, running, finished, stop = threading.Lock(), [], [], threading.Event()

    def show():  # under the lock
        bar.set_description("training " + ", ".join(f"{r.name} seed {r.seed}" for r in running))
        bar.set_postfix_str(eta.remaining(remaining, jobs, len(todo) - len(finished)))

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

            result = train_one(run, datasets, len(cpus) if jobs > 1 else plan.cores, on_iter, stop=stop)
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


def run_parallel(fn, items, jobs: int, stop: threading.Event):
    """fn(item) for every item, `jobs` threads at a time, in order of items. The first error (or
    Ctrl-C) sets `stop` (fn's train_one then kills its process), cancels what has not started and
    is raised once the running ones have stopped."""
    errors = []

    def guarded(item):
        if stop.is_set():
            return
        try:
            fn(item)
        except BaseException as e:
            if not stop.is_set():  # the first error; later ones are the stops it caused
                errors.append(e)
                stop.set()
            raise

    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(guarded, item) for item in items]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
    except BaseException:  # Ctrl-C in this thread
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise errors[0]


if __name__ == "__main__":
    # python -m d2ext.compare.run '<json datasets>' <train_net arguments>: registers the user's
    # datasets (plan.register_datasets), then runs d2ext.tools.train_net as its own __main__.
    from .plan import register_datasets

    register_datasets(**json.loads(sys.argv[1]))
    sys.argv = ["d2ext-train"] + sys.argv[2:]
    runpy.run_module("d2ext.tools.train_net", run_name="__main__", alter_sys=True)
