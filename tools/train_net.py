#!/usr/bin/env python
"""Trains or evaluates a d2ext (or any Detectron2) model from a yaml or lazy config.

See d2ext/tools/train_net.py (installed: `d2ext-train`).
"""

from d2ext.tools.train_net import (
    main,  # importing d2ext first sets the process environment (d2ext/environment.py)
)

if __name__ == "__main__":
    main()
