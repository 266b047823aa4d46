"""d2ext's CPU entry points make idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE unless the
user set it) before torch, and with it OpenMP, is loaded: set later, it has no effect."""
import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

ENTRY_POINTS = ["tools/train_net.py", "tools/benchmark_models.py", "tools/benchmark_ops.py",
                "tools/visualize_predictions.py", "tools/compare_methods.py", "tests/conftest.py"]
HEAVY = ("torch", "detectron2", "d2ext", "numpy", "cv2", "pytest", "fvcore")


def first_policy_line_and_heavy_import(path):
    tree = ast.parse(open(os.path.join(REPO_ROOT, path)).read())
    policy = heavy = None
    for node in tree.body:
        if policy is None and "OMP_WAIT_POLICY" in ast.unparse(node) and "setdefault" in ast.unparse(node):
            policy = node.lineno
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        if heavy is None and any(n.split(".")[0] in HEAVY for n in names):
            heavy = node.lineno
    return policy, heavy


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_policy_is_set_before_torch_loads(path):
    policy, heavy = first_policy_line_and_heavy_import(path)
    assert policy is not None, f"{path} does not set OMP_WAIT_POLICY"
    assert heavy is not None and policy < heavy, f"{path} sets OMP_WAIT_POLICY after importing torch & co"


def test_makefile_exports_the_policy_and_a_user_value_wins():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    show = ["make", "-s", "-C", REPO_ROOT, "-f", "Makefile", "-f", "-", "show"]
    rule = "show:\n\t@echo $$OMP_WAIT_POLICY\n"
    out = subprocess.run(show, input=rule, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run(show, input=rule, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ACTIVE"
