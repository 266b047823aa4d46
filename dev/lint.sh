#!/usr/bin/env bash
# The formatter and linter (ruff.toml): fails on any file `ruff format` would change or any lint
# error. `bash dev/lint.sh --fix` applies both instead.
set -euo pipefail
cd "$(dirname "$0")/.."
RUFF=${VENV:-.venv}/bin/ruff
if [ "${1:-}" = "--fix" ]; then
  "$RUFF" check --fix .
  "$RUFF" format .
else
  "$RUFF" format --check .
  "$RUFF" check .
fi
