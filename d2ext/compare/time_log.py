"""How long a comparison took, over all the invocations that trained for it: a resumed comparison
is several in a row, a parallel one several at once (processes over disjoint configs / seeds into
one <out>). Each invocation writes its own <out>/invocations/<start>-<pid>.json and updates its
wall time as it goes (at most once a minute, and at the end), so one that was killed still counts
up to its last update. The report's "time it took" is the time covered by at least one of them
(their sum when they ran one after another)."""

import datetime
import glob
import math
import os
import platform
import time
from typing import List, Optional

from .files import read_json, write_json


def machine(device: str = "cpu") -> str:
    """CPU model, the cores this process may use, torch's threads and version (and the GPU)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores, threads = len(os.sched_getaffinity(0)), torch.get_num_threads()
    text = f"{cpu}, {cores} cores, {threads} torch threads, torch {torch.__version__}"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(torch.device(device))}"
    return text


def read_entries(out: str) -> List[dict]:
    """The invocations' entries, oldest first."""
    entries = [read_json(path) for path in glob.glob(os.path.join(out, "invocations", "*.json"))]
    return sorted(entries, key=lambda e: e["started_unix"])


class TimeLog:
    def __init__(self, out: str, command: str, device: str = "cpu", min_interval_s: float = 60.0):
        now = datetime.datetime.now().astimezone()
        self.path = os.path.join(out, "invocations", f"{now:%Y%m%dT%H%M%S.%f}-{os.getpid()}.json")
        self.entry = {
            "started": now.isoformat(timespec="seconds"),
            "started_unix": now.timestamp(),
            "command": command,
            "machine": machine(device),
            "wall_s": 0.0,
            "runs_trained": 0,
        }
        self.start = time.perf_counter()
        self.min_interval_s = min_interval_s
        self.last_write = -math.inf
        self.update(force=True)

    def update(self, runs_trained: Optional[int] = None, force: bool = False):
        if runs_trained is not None:
            self.entry["runs_trained"] = runs_trained
        now = time.perf_counter()
        if not force and now - self.last_write < self.min_interval_s:
            return
        self.entry["wall_s"] = now - self.start
        self.last_write = now
        write_json(self.path, self.entry)


def covered_seconds(entries: List[dict]) -> float:
    """Length of the union of the invocations' [start, start + wall] intervals."""
    total, end = 0.0, -math.inf
    for e in sorted(entries, key=lambda e: e["started_unix"]):
        start, stop = e["started_unix"], e["started_unix"] + e["wall_s"]
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def summary(entries: List[dict]) -> str:
    """One sentence for the report: wall time, over how many invocations, on which machines."""
    if not entries:
        return ""
    covered, summed = covered_seconds(entries), sum(e["wall_s"] for e in entries)
    text = f"Time it took: {covered / 3600:.2f} h wall"
    if len(entries) > 1:
        text += f" over {len(entries)} invocations of the command"
        if summed > covered + 1:
            text += f" (some ran at once: {summed / 3600:.2f} h summed over processes)"
        else:
            text += (
                " (one after another: "
                + ", ".join(f"{e['wall_s'] / 3600:.2f} h" for e in entries)
                + ")"
            )
    machines = sorted({e["machine"] for e in entries})
    return text + ", on " + "; ".join(machines) + "."
