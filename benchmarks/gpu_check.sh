#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): rnncore's torch backend on a CUDA GPU against the numpy
# oracle, the CPU and hand-written cuDNN code, in under 8 minutes. Needs torch (CUDA build) and
# numpy; no TensorFlow, no network. Run from anywhere in the repository:
#
#     bash benchmarks/gpu_check.sh                 # JSON to $OUT/gpu_check.json (default benchmarks/results)
#     bash benchmarks/gpu_check.sh --device cuda:1
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".:backends${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
fi
# 470 s: the script stops starting sections after its 420 s budget; a section under way finishes
exec timeout 470 "$PYTHON" -m benchmarks.gpu_check --out "$OUT/gpu_check.json" "$@"
