#!/usr/bin/env bash
# GPU checking in stages that each fit one command of a short GPU slot (no network there). Every stage is bounded
# by `timeout`, writes its files and a stage_<name>.json {stage, rc, seconds, timed_out} under $OUT (else
# bench/results/), and prints a short summary.
#
#   bash bench/gpu_check.sh build           build in place for sm_90 only (GANKERN_CUDA_ARCH=90-real, all cores),
#                                           then `pytest -m gpu` (xdist when installed); about 3-5 minutes
#   bash bench/gpu_check.sh bench FAMILY... the benchmarks of those families (bench/bench_FAMILY.py), each bounded
#                                           by BENCH_TIMEOUT seconds (default 240); run groups of 1-3 families
#   bash bench/gpu_check.sh all             build, then every family (only where one command may take long)
#
# Environment: OUT (results folder), BUILD_TIMEOUT (default 300 s for the build + tests), BENCH_TIMEOUT,
# TRITON_CACHE_DIR (default build/triton-cache: a cache carried from an earlier stage or machine is reused).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-bench/results}
mkdir -p "$OUT_DIR"
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/build/triton-cache}
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# run_stage NAME SECONDS CMD...: runs CMD under timeout, logs to $OUT_DIR/NAME.log, writes stage_NAME.json.
run_stage() {
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo "== $name (at most ${limit}s)"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  rc=$?
  local secs=$(( $(date +%s) - t0 )) timed_out=false
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then timed_out=true; fi
  printf '{"stage": "%s", "rc": %d, "seconds": %d, "timed_out": %s}\n' "$name" "$rc" "$secs" "$timed_out" \
    > "$OUT_DIR/stage_$name.json"
  tail -5 "$OUT_DIR/$name.log"
  echo "-- $name: rc=$rc in ${secs}s$([ "$timed_out" = true ] && echo ' (TIMED OUT)')"
  return $rc
}

build_and_test() {
  GANKERN_CUDA_ARCH=90-real \
    "$PY" -m pip install --no-build-isolation --no-deps -e . -q || { echo "BUILD FAILED"; return 1; }
  "$PY" -m gankern info > "$OUT_DIR/info.txt" 2>&1
  local xdist=()
  if "$PY" -c "import xdist" 2>/dev/null; then xdist=(-n 4); fi
  "$PY" -m pytest -m gpu -q -p no:cacheprovider "${xdist[@]}" --junitxml="$OUT_DIR/pytest_gpu.xml"
}

bench() {
  local fam=$1
  "$PY" "bench/bench_${fam}.py" --out "$OUT_DIR/bench_${fam}.json" > "$OUT_DIR/bench_${fam}.md"
}

families() {
  for f in bench/bench_*.py; do b=$(basename "$f" .py); echo "${b#bench_}"; done
}

stage=${1:-all}
shift || true
status=0
case "$stage" in
  build)
    export -f build_and_test; export PY OUT_DIR
    run_stage build_test "${BUILD_TIMEOUT:-300}" bash -c build_and_test || status=1 ;;
  bench)
    if [ $# -eq 0 ]; then
      echo "usage: bash bench/gpu_check.sh bench FAMILY... (one of: $(families | tr '\n' ' '))"
      exit 2
    fi
    export -f bench; export PY OUT_DIR
    for fam in "$@"; do
      [ -f "bench/bench_${fam}.py" ] || { echo "no bench/bench_${fam}.py"; status=1; continue; }
      run_stage "bench_$fam" "${BENCH_TIMEOUT:-240}" bash -c "bench $fam" || status=1
      grep -E '^\|' "$OUT_DIR/bench_${fam}.md" 2>/dev/null
    done ;;
  all)
    bash "$0" build || status=1
    # shellcheck disable=SC2046
    bash "$0" bench $(families) || status=1 ;;
  *)
    echo "unknown stage '$stage' (build, bench FAMILY..., all)"; exit 2 ;;
esac
exit $status
