#!/usr/bin/env bash
# `make gpu-test`: everything CUDA-capable, on a machine with a GPU. Without CUDA it says so and
# exits 0. Stages (each one command, so each fits a 10-minute limit on a lent machine):
#   build      build d2ext._C with its CUDA kernels (FORCE_CUDA=1)
#   cuda       the cuda-marked tests: every op on cuda vs its CPU kernel and reference, every
#              model's float32 and AMP training step on cuda, 100-iteration AMP trainings +
#              evaluation (D2EXT_GPU_TRAIN_METHODS: default a subset, "all" with --all-methods)
#   suite      the rest of the test suite (CUDA visible: device-parametrized tests run on both)
#   benchmark  tools/benchmark_ops.py --device cuda (--quick unless --full)
# Usage: dev/gpu_test.sh [--stage build|cuda|suite|benchmark]... [--all-methods] [--full]
#   default stages: build cuda benchmark (~5 min on an H100 machine); --full adds suite and the
#   full-size benchmark. Extra pytest arguments: PYTEST_ARGS="...".
#   D2EXT_PYTHON=/path/to/python: use that interpreter's environment as it is (torch, Detectron2 and the
#   test dependencies already importable, e.g. a GPU machine without a package registry); the
#   build stage then only compiles d2ext._C in place instead of creating .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
own_env=0 PY=$VENV/bin/python
if [ -n "${D2EXT_PYTHON:-}" ]; then
  own_env=1 PY=$D2EXT_PYTHON
  # d2ext is built in place, not installed: subprocesses (train_net.py, benchmark_ops.py) import it
  # from the checkout.
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

stages=() all_methods=0 full=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stages+=("$2"); shift 2 ;;
    --all-methods) all_methods=1; shift ;;
    --full) full=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_test.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ ${#stages[@]} -eq 0 ]; then
  stages=(build cuda benchmark)
  [ "$full" = 1 ] && stages=(build cuda suite benchmark)
fi
for s in "${stages[@]}"; do
  case "$s" in build|cuda|suite|benchmark) ;; *) echo "gpu_test.sh: unknown stage '$s' (build, cuda, suite, benchmark)" >&2; exit 2 ;; esac
done

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu-test: no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')): nothing to run. Run it on a machine with a GPU."
  exit 0
fi
[ "$all_methods" = 1 ] && export D2EXT_GPU_TRAIN_METHODS=all

run() { echo "+ $*"; "$@"; }
for s in "${stages[@]}"; do
  echo "=== gpu-test: $s"
  case "$s" in
    build)
      if [ "$own_env" = 1 ]; then run env FORCE_CUDA=1 "$PY" setup.py -q build_ext --inplace
      else run env FORCE_CUDA=1 bash dev/setup_env.sh; fi
      # The CUDA kernels must be in the built library, or every cuda op test fails confusingly.
      run "$PY" -c "import torch, d2ext.layers as L; assert L.has_ops(); L.pairwise_iou(torch.zeros(1, 4, device='cuda'), torch.zeros(1, 4, device='cuda')); print('d2ext._C runs on cuda')" ;;
    cuda)
      run "$PY" -m pytest tests -m cuda ${PYTEST_ARGS:-} ;;
    suite)
      run "$PY" -m pytest tests -m "not cuda" ${PYTEST_ARGS:-} ;;
    benchmark)
      if [ "$full" = 1 ]; then run "$PY" tools/benchmark_ops.py --device cuda
      else run "$PY" tools/benchmark_ops.py --device cuda --quick; fi ;;
  esac
done
