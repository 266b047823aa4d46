"""The process environment d2ext's entry points start with, as Detectron2's
``setup_environment``. Imports nothing heavy: ``import d2ext`` calls :func:`setup_environment`
before it loads torch, so every entry point (console scripts, ``tools/*.py``, ``python -m
d2ext.tools.*``) that imports d2ext first gets it."""

import os
import sys

# Idle OpenMP threads spin this many rounds, then sleep. libgomp's default spin made a training
# step ~3-5x slower next to one other busy process, OMP_WAIT_POLICY=PASSIVE ~19% slower on an idle
# machine (docs/install.md, "Threads").
GOMP_SPINCOUNT = "10000"


def setup_environment():
    """Sets GOMP_SPINCOUNT=10000 unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT, and only
    while torch is not loaded yet: libgomp reads its settings once, when torch loads it."""
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
