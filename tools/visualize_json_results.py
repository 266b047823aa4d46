#!/usr/bin/env python
"""Draws an evaluation's results json next to the ground truth.

See d2ext/tools/visualize_json_results.py (installed: `d2ext-visualize-json-results`).
"""

from d2ext.tools.visualize_json_results import (
    main,  # importing d2ext first sets the process environment (d2ext/environment.py)
)

if __name__ == "__main__":
    main()
