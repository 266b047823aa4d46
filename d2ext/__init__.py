"""d2ext: dense-detector training recipes for Detectron2.

Importing d2ext registers its meta-architectures, heads and backbones with Detectron2's registries
and its synthetic dataset with DatasetCatalog.
"""
import os
import sys

# Before torch loads (when d2ext is imported first: the installed d2ext-train / d2ext-demo /
# d2ext-export commands): idle OpenMP threads spin 10k rounds, then sleep, as tools/*.py set it
# (README "Threads"). A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins; once torch is loaded,
# libgomp has read its settings and d2ext leaves the environment alone.
if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"

from . import data, modeling  # noqa: F401,E402  (registration side effects)
