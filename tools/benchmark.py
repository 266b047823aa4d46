#!/usr/bin/env python
"""Times a model's training, inference or data loading: see d2ext/tools/benchmark.py
(installed: `d2ext-benchmark`)."""

# Importing d2ext first sets the process environment (d2ext/environment.py).
from d2ext.tools.benchmark import main

if __name__ == "__main__":
    main()
