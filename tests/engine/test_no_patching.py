"""Importing d2ext (its engine and tools too) replaces nothing in Detectron2: every attribute of
every detectron2 module loaded before is the same object after. Registering models and datasets
in Detectron2's registries is the intended extension and adds entries only."""

import subprocess
import sys

from conftest import REPO_ROOT

CODE = r"""
import sys, types
import detectron2.checkpoint, detectron2.config, detectron2.data, detectron2.engine, detectron2.engine.defaults
import detectron2.evaluation, detectron2.modeling, detectron2.solver, detectron2.utils.comm

def snapshot():
    return {name: dict(vars(m)) for name, m in list(sys.modules.items())
            if name.startswith("detectron2") and isinstance(m, types.ModuleType)}

before = snapshot()
import d2ext, d2ext.engine, d2ext.tools.train_net, d2ext.tools.demo, d2ext.tools.export_model
after = snapshot()
changed = [f"{mod}.{attr}" for mod, attrs in before.items() for attr, obj in attrs.items()
           if attr not in ("__loader__", "__spec__") and after[mod].get(attr, None) is not obj]
print("CHANGED:", changed)
"""


def test_importing_d2ext_replaces_nothing_in_detectron2():
    out = subprocess.run(
        [sys.executable, "-c", CODE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "CHANGED: []", out.stdout[-3000:]


def test_importing_d2ext_prints_no_warning():
    """Detectron2's own torch.jit.script deprecation warnings are not shown by `import d2ext`."""
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import d2ext, d2ext.tools.train_net"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr[-3000:]
