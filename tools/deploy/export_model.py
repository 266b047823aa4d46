#!/usr/bin/env python
"""Exports a model to TorchScript or ONNX: see d2ext/tools/export_model.py (also `d2ext-export`)."""
from d2ext.tools.export_model import main

if __name__ == "__main__":
    main()
