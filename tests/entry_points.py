"""Every user-facing entry point of d2ext, found rather than listed: the console scripts setup.py
declares and the scripts under tools/. Tests over "every entry point" take them from here, so a
new tool is covered (or fails a test until it is) without editing the tests' lists."""

import glob
import os
import re

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with open(os.path.join(REPO_ROOT, "setup.py")) as _f:
    # "d2ext-train=d2ext.tools.train_net:main" -> {"d2ext-train": ("d2ext.tools.train_net", "main")}
    CONSOLE_SCRIPTS = {
        name: (module, function)
        for name, module, function in re.findall(r'"(d2ext-[\w-]+)=([\w.]+):(\w+)"', _f.read())
    }

TOOL_SCRIPTS = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "tools", "**", "*.py"), recursive=True)
)
