"""One run's training subprocess (`python -m d2ext.compare.training`, d2ext.tools.train_net with the
user's datasets registered), its environment and CPU pinning, and the thread pool of --jobs runs."""

import json
import os
import runpy
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import List, Optional

from tqdm import tqdm

import d2ext

from .files import read_metrics, write_json
from .plan import Run
from .results import summarize

# The folder d2ext is imported from (site-packages, or a checkout): the runs import the same d2ext.
D2EXT_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(d2ext.__file__)))


def subprocess_env(cores: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(cores)
    # The subprocess imports the d2ext this process runs, whatever else is installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (D2EXT_PARENT, env.get("PYTHONPATH")) if p)
    return env


def train_command(run: Run, datasets: dict) -> List[str]:
    return [
        sys.executable,
        "-m",
        "d2ext.compare.training",
        json.dumps(datasets),
        "--config-file",
        run.config,
        *run.opts,
    ]


def train_one(
    run: Run,
    datasets: dict,
    cores: int,
    on_iter=None,
    poll_s: float = 2.0,
    stop: Optional[threading.Event] = None,
) -> Optional[dict]:
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
        proc = subprocess.Popen(
            train_command(run, datasets),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=subprocess_env(cores),
        )
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
        raise ValueError(
            f"--jobs {jobs}: needs 1 to --cores ({cores}) concurrent runs, each on its own cores"
        )
    per = cores // jobs
    return [cpus[i * per : (i + 1) * per] for i in range(jobs)]


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
    # python -m d2ext.compare.training '<json datasets>' <train_net arguments>: registers the user's
    # datasets (d2ext.data.registration), then runs d2ext.tools.train_net as its own __main__.
    from d2ext.data.registration import register_datasets

    register_datasets(**json.loads(sys.argv[1]))
    sys.argv = ["d2ext-train"] + sys.argv[2:]
    runpy.run_module("d2ext.tools.train_net", run_name="__main__", alter_sys=True)
