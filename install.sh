#!/usr/bin/env bash
# Set up gankern on a fresh Linux machine: the pinned CPU stack, then gankern itself (editable). The extension
# gankern._C is compiled with nvcc when nvcc is found (CUDA_HOME, PATH or /usr/local/cuda); the CPU simulation
# gankern._sim (used by the tests) is always compiled.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
"$PY" -m pip install -q -r requirements-cpu.txt
"$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -m gankern info
