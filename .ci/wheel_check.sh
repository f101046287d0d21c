#!/usr/bin/env bash
# gankern as a user installs it: build the wheel, install it into a clean venv (no editable install, no requirements
# file: requirements-cpu.txt is passed only as constraints, so that pip takes the CPU torch and the tested versions
# but installs nothing the wheel does not ask for), check what `gankern info` reports, and run the README's job for a
# few steps. Run after install.sh, whose toolchain and build/ it reuses (the wheel links the objects already built).
# The venv lives in build/wheel-check (ignored by git) and is removed at the start of the next run, not at the end:
# deleting its ~20k files takes a minute or two on this disk, and CI's fresh clone has none to delete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SRC=$PWD
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
NVCC=$(command -v nvcc >/dev/null 2>&1 && echo 1 || echo 0)
WORK=$SRC/build/wheel-check
t0=$SECONDS
rm -rf "$WORK"

echo "== wheel: build"
"$PY" -m pip wheel . --no-deps --no-build-isolation -q -w "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/gankern-*.whl)
echo "== wheel: install $(basename "$WHEEL")[tensorboard] into a clean venv"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -qq --no-compile "$WHEEL[tensorboard]" -c "$SRC/requirements-cpu.txt"

cd "$WORK"                  # away from the source tree: the venv's gankern is the one imported
export GANKERN_CACHE="$WORK/cache" OMP_NUM_THREADS=1
NVCC=$NVCC venv/bin/python - <<'EOF'
import importlib, os, sys
import torch, gankern
site = os.path.join(sys.prefix, "lib")
assert gankern.__file__.startswith(site), f"gankern imported from {gankern.__file__}, not the venv"
assert torch.version.cuda is None, f"the venv got a CUDA build of torch ({torch.__version__})"
importlib.import_module("gankern._sim")                 # the wheel carries the built extensions
built = gankern.info()["extension"]["built_with_cuda"]
assert built == (os.environ["NVCC"] == "1"), f"gankern._C built: {built}, nvcc on this machine: {os.environ['NVCC']}"
if built:
    importlib.import_module("gankern._C")
EOF
venv/bin/gankern info
echo "== wheel: the README's job, 2 kimg"
venv/bin/gankern train --config dcgan --data digits --outdir runs --kimg 2 -q
RUN=runs/00000-dcgan-digits-32
for f in plot.png fakes-latest.png metrics.jsonl config.json; do
  test -s "$RUN/$f" || { echo "wheel check: the job wrote no $RUN/$f"; exit 1; }
done
# the wheel was installed with its [tensorboard] extra, so the job must also have written TensorBoard events
ls "$RUN"/events.out.tfevents.* >/dev/null 2>&1 || { echo "wheel check: no TensorBoard events in $RUN"; exit 1; }
venv/bin/python -c "import PIL.Image as I, sys; im = I.open(sys.argv[1]); assert im.format == 'PNG', im.format" \
  "$RUN/plot.png"
echo "== wheel check passed in $((SECONDS - t0)) s"
