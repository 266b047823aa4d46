#!/usr/bin/env bash
# Creates (or reuses) .venv with everything d2ext needs, then builds d2ext in place.
# Idempotent: a second run with unchanged requirements only re-runs the (incremental) op build.
#   VENV=path   where the environment lives (default .venv)
#   D2EXT_SKIP_BUILD=1   set up the environment only
# Installs requirements.txt, Detectron2, requirements-test.txt (the tests' mmdetection oracle) and d2ext.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"

D2_WHEEL_NAME=sal-detectron2==0.7.2
D2_WHEEL_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561

if [ ! -x "$PY" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi

# setup.py too: its console scripts are installed by the editable install below.
stamp="$VENV/.d2ext-requirements-$(sha256sum requirements.txt requirements-test.txt requirements-export-test.txt dev/setup_env.sh setup.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing requirements.txt into $VENV (first run takes a few minutes)"
  "$PY" -m pip install -q --upgrade "pip<26" wheel
  "$PY" -m pip install -q -r requirements.txt
  # onnx / onnxruntime for the export tests (tests/deploy), pinned to numpy < 2 as Detectron2.
  "$PY" -m pip install -q -r requirements-export-test.txt -c requirements.txt

  if "$PY" -c "import detectron2" 2>/dev/null; then
    echo "[setup] keeping the Detectron2 already importable in $VENV"
  else
    # Detectron2 has no official PyPI release. sal-detectron2 is a wheel of its main branch
    # (Python sources of 2024-08) tagged cp310; its Python code runs on any Python 3 once
    # installed as a pure wheel (its cp310-only _C is never loaded, d2ext does not need it).
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$tmp" "$D2_WHEEL_NAME"
    whl=$(ls "$tmp"/*.whl)
    echo "$D2_WHEEL_SHA256  $whl" | sha256sum -c --quiet -
    mv "$whl" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
    "$PY" -m pip install -q "$tmp/sal_detectron2-0.7.2-py3-none-any.whl" -c requirements.txt
    rm -rf "$tmp"
  fi
  # The tests' oracle (mmdetection); --no-deps: requirements-test.txt lists its dependencies,
  # so none of them can move a pin of requirements.txt.
  "$PY" -m pip install -q --no-deps -r requirements-test.txt
  # d2ext itself, editable and without dependencies (they come from requirements.txt above).
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . 
  rm -f "$VENV"/.d2ext-requirements-*
  touch "$stamp"
fi

if [ "${D2EXT_SKIP_BUILD:-0}" != 1 ]; then
  echo "[setup] building d2ext._C (incremental)"
  "$PY" setup.py -q build_ext --inplace
fi
