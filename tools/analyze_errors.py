#!/usr/bin/env python
"""A detector's errors by class, from a results json: see d2ext/tools/analyze_errors.py
(installed: `d2ext-analyze-errors`)."""

# importing d2ext first sets the process environment (d2ext/environment.py)
from d2ext.tools.analyze_errors import main

if __name__ == "__main__":
    main()
