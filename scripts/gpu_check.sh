#!/usr/bin/env bash
# Everything that needs a real CUDA GPU, in one command, with its logs and numbers in one folder:
#
#   bash scripts/gpu_check.sh tests [OUT]   # the `gpu` tests (in-process and real TorchServe)
#   bash scripts/gpu_check.sh bench [OUT]   # scripts/benchmark.py --device cuda (fp32, fp16)
#   bash scripts/gpu_check.sh all [OUT]     # both (default)
#
# CI has no GPU: there every `gpu` test skips. Run this on a GPU host and record the GPU's name
# (OUT/gpu.csv) with the numbers; docs/gpu.md, section "Verified on real hardware", says what was verified on which GPU.
# PYTHON picks the interpreter (default: .venv/bin/python, else python3).
# This assumes a host that is a copy of ours (.venv, Java for TorchServe, registry weights).
# For a borrowed GPU host with its own python3, no Java and no network, use the GPU pack and
# scripts/gpu_host.py instead: docs/gpu-check.md has the commands.
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
OUT=${2:-results/gpu-check-$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv" || {
  echo "gpu_check: nvidia-smi failed: no NVIDIA GPU here" >&2; exit 2; }
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee "$OUT/torch.txt"
rc=0
if [ "$STAGE" = tests ] || [ "$STAGE" = all ]; then
  # every file that holds a `gpu` test; -rA lists each test's outcome (a skip here is a failure
  # of the check: on a GPU host nothing marked gpu may skip)
  "$PY" -m pytest -m gpu -rA -p no:cacheprovider tests/integration/test_gpu.py \
    tests/unit/test_onnx_export.py tests/unit/test_portable_export.py tests/unit/test_handler.py \
    --junitxml "$OUT/pytest-gpu.xml" 2>&1 | tee "$OUT/pytest-gpu.log" || rc=1
  if grep -q "<skipped" "$OUT/pytest-gpu.xml" 2>/dev/null; then
    echo "gpu_check: some gpu tests skipped on a GPU host (see $OUT/pytest-gpu.log)" >&2; rc=1
  fi
fi
if [ "$STAGE" = bench ] || [ "$STAGE" = all ]; then
  "$PY" scripts/benchmark.py --device cuda --out "$OUT/benchmark" ${BENCH_ARGS:-} 2>&1 \
    | tee "$OUT/benchmark.log" || rc=1
fi
exit $rc
