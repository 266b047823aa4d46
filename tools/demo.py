#!/usr/bin/env python
"""Draws a model's detections on images or a video.

See d2ext/tools/demo.py (installed: `d2ext-demo`).
"""

from d2ext.tools.demo import (
    main,  # importing d2ext first sets the process environment (d2ext/environment.py)
)

if __name__ == "__main__":
    main()
