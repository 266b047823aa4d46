"""d2ext's CPU entry points bound the spin of idle OpenMP threads (GOMP_SPINCOUNT=10000 unless the
user set OMP_WAIT_POLICY or GOMP_SPINCOUNT) before torch, and with it OpenMP, is loaded: set
later, it has no effect (README "Threads")."""
import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

ENTRY_POINTS = ["tools/train_net.py", "tools/benchmark_models.py", "tools/benchmark_ops.py",
                "tools/visualize_predictions.py", "tools/compare_methods.py", "tests/conftest.py",
                "d2ext/__init__.py"]  # the last for the installed d2ext-train, d2ext-demo, d2ext-export
HEAVY = ("torch", "detectron2", "d2ext", "numpy", "cv2", "pytest", "fvcore")


def first_policy_line_and_heavy_import(path):
    tree = ast.parse(open(os.path.join(REPO_ROOT, path)).read())
    policy = heavy = None
    for node in tree.body:
        code = ast.unparse(node)
        if policy is None and "'OMP_WAIT_POLICY' not in os.environ" in code and "setdefault('GOMP_SPINCOUNT'" in code:
            policy = node.lineno
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["d2ext"] if node.level else [node.module or ""]  # relative: d2ext's own modules
        if heavy is None and any(n.split(".")[0] in HEAVY for n in names):
            heavy = node.lineno
    return policy, heavy


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_policy_is_set_before_torch_loads(path):
    policy, heavy = first_policy_line_and_heavy_import(path)
    assert policy is not None, f"{path} does not set GOMP_SPINCOUNT"
    assert heavy is not None and policy < heavy, f"{path} sets GOMP_SPINCOUNT after importing torch & co"


def make_env_of_a_target(**user):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user)
    show = ["make", "-s", "-C", REPO_ROOT, "-f", "Makefile", "-f", "-", "show"]
    rule = "show:\n\t@echo \"$${OMP_WAIT_POLICY-unset} $${GOMP_SPINCOUNT-unset}\"\n"
    return subprocess.run(show, input=rule, env=env, capture_output=True, text=True, check=True).stdout.split()


def test_makefile_exports_the_spin_count_and_a_user_value_wins():
    assert make_env_of_a_target() == ["unset", "10000"]
    assert make_env_of_a_target(GOMP_SPINCOUNT="500") == ["unset", "500"]
    assert make_env_of_a_target(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "unset"]  # libgomp ignores the count then


def test_an_entry_point_sets_it_only_when_the_user_did_not():
    code = "import os, runpy; runpy.run_path('tests/conftest.py'); print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    for user, expected in (({}, "10000"), ({"OMP_WAIT_POLICY": "PASSIVE"}, "unset"), ({"GOMP_SPINCOUNT": "7"}, "7")):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env.update(user)
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-1] == expected, user


def test_importing_d2ext_first_sets_it_and_after_torch_does_not():
    """The installed console scripts import d2ext before torch; a script that loaded torch first
    keeps libgomp's settings and its environment unchanged."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = REPO_ROOT
    show = "import os; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    for code, user, expected in (("import d2ext", {}, "10000"), ("import torch, d2ext", {}, "unset"),
                                 ("import d2ext", {"OMP_WAIT_POLICY": "ACTIVE"}, "unset"),
                                 ("import d2ext", {"GOMP_SPINCOUNT": "7"}, "7")):
        out = subprocess.run([sys.executable, "-c", f"{code}; {show}"], env=dict(env, **user), cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.split()[-1]
        assert out == expected, (code, user, out)
