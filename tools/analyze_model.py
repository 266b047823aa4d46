#!/usr/bin/env python
"""Counts a model's FLOPs, activations and parameters: see d2ext/tools/analyze_model.py
(installed: `d2ext-analyze-model`)."""

# Importing d2ext first sets the process environment (d2ext/environment.py).
from d2ext.tools.analyze_model import main

if __name__ == "__main__":
    main()
