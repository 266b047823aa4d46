#!/usr/bin/env python
"""Converts an mmdetection checkpoint to a d2ext checkpoint.

See d2ext/tools/convert_mmdet_checkpoint.py (installed: `d2ext-convert-mmdet-checkpoint`).
"""

from d2ext.tools.convert_mmdet_checkpoint import (
    main,  # importing d2ext first sets the process environment (d2ext/environment.py)
)

if __name__ == "__main__":
    main()
