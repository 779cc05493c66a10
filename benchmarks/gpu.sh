#!/usr/bin/env bash
# The fit-overhead and checkpoint rows on an NVIDIA GPU (ResNet-50, weights=None, random 224x224 data):
# benchmarks/bench_gpu.py. Where there is no GPU it says so and exits 0. Downloads nothing.
#   benchmarks/gpu.sh                  # the table
#   benchmarks/gpu.sh --json gpu.json  # and the JSON; other flags go to bench_gpu.py (--pairs, --epochs, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu.sh: no NVIDIA GPU here (nvidia-smi not found); nothing to measure."
    exit 0
fi
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "gpu.sh: nvidia-smi lists no GPU; nothing to measure."
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/bench_gpu.py --require-gpu "$@"
