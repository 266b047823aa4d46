"""The comparison's files: atomic JSON writes (a result file is whole or absent, which is what
resuming relies on), JSON reads, and Detectron2's metrics.json."""

import json
import os
from typing import List


def write_json(path, data):
    """Written to a temporary name and renamed: a result file is whole or absent."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_metrics(path: str) -> List[dict]:
    """Detectron2's JSONWriter output: one json object per line."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]
