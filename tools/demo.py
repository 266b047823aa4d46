#!/usr/bin/env python
"""Draws a model's detections on images or a video: see d2ext/tools/demo.py (also `d2ext-demo`)."""
from d2ext.tools.demo import main

if __name__ == "__main__":
    main()
