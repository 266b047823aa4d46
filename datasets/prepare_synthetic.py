#!/usr/bin/env python
"""Writes the synthetic d2ext_shapes splits under $DETECTRON2_DATASETS (default ./datasets)."""

import argparse

from d2ext.data.synthetic import SPLITS, prepare_split

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--root", default=None, help="dataset root (default: $DETECTRON2_DATASETS or ./datasets)"
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args()
    for name in SPLITS:
        print(name, "->", prepare_split(name, args.root, force=args.force))
