#!/usr/bin/env bash
# Compiles d2ext's CUDA sources (and the C++ ones) in a throwaway folder, so a .cu file that does
# not compile fails CI even on a machine with no GPU. Nothing is installed or left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python
if [ -z "${CUDA_HOME:-}" ]; then
  # nvcc may be a wrapper script: ask it where its toolkit is rather than guessing from its path.
  command -v nvcc >/dev/null || { echo "check_cuda_build: nvcc not found; set CUDA_HOME" >&2; exit 1; }
  top=$(nvcc --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
  CUDA_HOME=$(cd "$top" && pwd -P)
fi
export CUDA_HOME FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "[cuda] compiling with CUDA_HOME=$CUDA_HOME for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
"$PY" setup.py -q build_ext --build-temp "$out/temp" --build-lib "$out/lib"
ls "$out"/lib/d2ext/_C*.so >/dev/null
echo "[cuda] d2ext._C with CUDA kernels compiled"
