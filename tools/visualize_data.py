#!/usr/bin/env python
"""Draws a config's training data (as annotated, or as the training loader yields it) with its boxes.

See d2ext/tools/visualize_data.py (installed: `d2ext-visualize-data`).
"""

from d2ext.tools.visualize_data import (
    main,  # importing d2ext first sets the process environment (d2ext/environment.py)
)

if __name__ == "__main__":
    main()
