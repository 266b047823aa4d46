"""Every entry point starts torch with d2ext's process environment (d2ext/environment.py): idle
OpenMP threads spin GOMP_SPINCOUNT=10000 rounds unless the user set OMP_WAIT_POLICY or
GOMP_SPINCOUNT; set after torch loads, it would have no effect (README "Threads").

Each entry point runs in a fresh process with a probe that reports the environment at the moment
torch is first imported, then ends the process (so no entry point does its work here)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from entry_points import CONSOLE_SCRIPTS, TOOL_SCRIPTS

PROBE = """
import os, runpy, sys
class TorchProbe:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("at torch import:", os.environ.get("GOMP_SPINCOUNT", "unset"), flush=True)
            os._exit(0)
sys.meta_path.insert(0, TorchProbe())
kind, target = sys.argv[1:3]
sys.argv = [target, "--help"]
if kind == "script":
    runpy.run_path(target, run_name="__main__")
else:  # a console script's module, imported as its wrapper does
    runpy.run_module(target, run_name="__main__")
print("torch never imported", flush=True)
"""

ENTRY_POINTS = [("script", path) for path in TOOL_SCRIPTS] + [
    ("module", module) for module, _ in CONSOLE_SCRIPTS.values()
]


def spin_count_at_torch_import(kind, target, **user):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, kind, target],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("kind,target", ENTRY_POINTS, ids=[t for _, t in ENTRY_POINTS])
def test_entry_point_starts_torch_with_the_spin_count(kind, target):
    assert spin_count_at_torch_import(kind, target) == "at torch import: 10000"


def test_a_user_setting_wins():
    kind, target = ENTRY_POINTS[0]
    assert spin_count_at_torch_import(kind, target, GOMP_SPINCOUNT="7") == "at torch import: 7"
    assert (
        spin_count_at_torch_import(kind, target, OMP_WAIT_POLICY="PASSIVE")
        == "at torch import: unset"
    )


def test_importing_torch_first_leaves_the_environment_alone():
    """A user's script that loaded torch before d2ext: libgomp has read its settings already."""
    code = "import torch, d2ext, os; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert out.stdout.split()[-1] == "unset", out.stderr[-2000:]
