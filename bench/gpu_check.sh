#!/usr/bin/env bash
# All GPU checking in one command (run on the device machine, no network): build in place, `pytest -m gpu`, every
# benchmark, JSON results under $OUT (else bench/results/), and a short table last.
#   bash bench/gpu_check.sh [FAMILY ...]     (default: every bench/bench_*.py)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-bench/results}
mkdir -p "$OUT_DIR"
status=0

echo "== build"
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
"$PY" -m pip install --no-build-isolation --no-deps -e . -q || { echo "BUILD FAILED"; exit 1; }
"$PY" -m gankern info | tee "$OUT_DIR/info.txt"

echo "== pytest -m gpu"
"$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT_DIR/pytest_gpu.xml" 2>&1 | tee "$OUT_DIR/pytest_gpu.txt" | tail -30
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== benchmarks"
families=("$@")
if [ ${#families[@]} -eq 0 ]; then
  for f in bench/bench_*.py; do b=$(basename "$f" .py); families+=("${b#bench_}"); done
fi
for fam in "${families[@]}"; do
  echo "-- $fam"
  OUT="$OUT_DIR" "$PY" "bench/bench_${fam}.py" --out "$OUT_DIR/bench_${fam}.json" > "$OUT_DIR/bench_${fam}.md" 2>&1 \
    || { echo "bench_${fam} FAILED (see $OUT_DIR/bench_${fam}.md)"; status=1; }
done

echo "== summary"
for fam in "${families[@]}"; do [ -f "$OUT_DIR/bench_${fam}.md" ] && grep -E '^\|' "$OUT_DIR/bench_${fam}.md"; done
exit $status
