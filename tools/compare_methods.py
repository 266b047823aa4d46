#!/usr/bin/env python
"""Trains and compares configs x seeds and writes a report.

See d2ext/tools/compare_methods.py (installed: `d2ext-compare`).
"""

import sys

from d2ext.tools.compare_methods import (
    main,  # importing d2ext first sets the process environment (d2ext/environment.py)
)

if __name__ == "__main__":
    sys.exit(main())
