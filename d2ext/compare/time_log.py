"""How long a comparison took, over all the invocations that trained for it (a resumed comparison
is several): each appends an entry to <out>/invocations.json and updates its wall time as it goes
(at most once a minute, and at the end), so an invocation that was killed still counts up to its
last update. The report's "time it took" is their sum."""
import datetime
import json
import math
import os
import platform
import time
from typing import List, Optional


def machine(device: str = "cpu") -> str:
    """CPU model, the cores this process may use, torch's threads and version (and the GPU)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(torch.device(device))}"
    return text


def read_entries(out: str) -> List[dict]:
    path = os.path.join(out, "invocations.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)


class TimeLog:
    def __init__(self, out: str, command: str, device: str = "cpu", min_interval_s: float = 60.0):
        self.path = os.path.join(out, "invocations.json")
        self.entries = read_entries(out)
        self.entry = {"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                      "command": command, "machine": machine(device), "wall_s": 0.0, "runs_trained": 0}
        self.entries.append(self.entry)
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
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.entries, f, indent=1)
        os.replace(self.path + ".tmp", self.path)


def summary(entries: List[dict]) -> str:
    """One sentence for the report: total wall time, over how many invocations, on which machines."""
    if not entries:
        return ""
    total = sum(e["wall_s"] for e in entries)
    machines = sorted({e["machine"] for e in entries})
    text = f"Time it took: {total / 3600:.2f} h wall"
    if len(entries) > 1:
        text += (f", the sum of {len(entries)} invocations that trained (resumed; "
                 + ", ".join(f"{e['wall_s'] / 3600:.2f} h" for e in entries) + ")")
    return text + ", on " + "; ".join(machines) + "."
