#!/usr/bin/env python
"""Exports a model to TorchScript or ONNX.

See d2ext/tools/export_model.py (installed: `d2ext-export`).
"""

from d2ext.tools.export_model import (
    main,  # importing d2ext first sets the process environment (d2ext/environment.py)
)

if __name__ == "__main__":
    main()
