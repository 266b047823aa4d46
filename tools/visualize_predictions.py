#!/usr/bin/env python
"""Draws ground truth and predictions of the first test images side by side.

See d2ext/tools/visualize_predictions.py (installed: `d2ext-visualize-predictions`).
"""

from d2ext.tools.visualize_predictions import (
    main,  # importing d2ext first sets the process environment (d2ext/environment.py)
)

if __name__ == "__main__":
    main()
