#!/usr/bin/env bash
# Everything that needs a GPU, in one command sized for a short lease on one card:
#   1. install ddmini (a prebuilt wheel from .whl/ if it has the CUDA kernels, else build here for sm_90);
#   2. the GPU kernel benchmarks (step ops at 2^22..2^26 elements; Fréchet trace sqrt vs eigvals);
#   3. two paper-U-Net runs, p = 1 and p = 0, trained side by side under a time budget, while the
#      CUDA tests run;
#   4. logs, reports and pictures under $OUT (runs.tgz; the generated images in samples.tgz).
#
#   OUT=gpu-out DDMINI_DATA=/path/to/mnist bash bench/gpu_check.sh [train-minutes 5.5] [deadline-seconds 545] [steps 4500]
# (the defaults: what the README's H200 figures used; the command needs ~9.5 minutes of a lease)
#
# The runs use the paper preset's U-Net (15 M parameters) with a shortened recipe that fits the
# budget: the paper-short preset (ddmini/config.py); each run's config.json has every value. The
# recipe is sized for minutes, not the preset's 40,000 steps: EMA decay 0.999 (the preset's 0.9999
# averages over ~10,000 steps, more than such a run has), and a cosine decay over STEPS steps (set it
# to what the budget allows; the time budget stops the run in any case).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
OUT=${OUT:-gpu-out}
MIN=${1:-5.5}
DEADLINE=${2:-545}
STEPS=${3:-4500}
PY=${PYTHON:-python3}
RUN=${RUN_DIR:-runs_gpu}
export PYTHONUNBUFFERED=1 DDMINI_PROGRESS=0 PYTHONPATH="$PWD"  # the source tree first (ddmini._C still resolves to the install)
mkdir -p "$OUT"
log() { echo "== +$((SECONDS - T0))s $*"; }
left() { echo $((DEADLINE - (SECONDS - T0))); }

log machine
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

log install
if ls .whl/ddmini-*.whl >/dev/null 2>&1 \
   && $PY -m pip install -q --no-deps --no-index --force-reinstall .whl/ddmini-*.whl \
   && $PY -c "import sys, ddmini._C as C; sys.exit(0 if C.has_cuda() else 1)"; then
  echo "installed the prebuilt wheel"
else
  $PY -m pip install -q --no-deps --no-build-isolation -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 . || exit 1
fi
$PY -c "import ddmini._C as C; print('ddmini._C CUDA kernels compiled:', C.has_cuda())"

log "bench: step kernels"
timeout 60 $PY bench/kernels.py --device cuda --no-compile --only steps --sizes 22,24,26  # and in place
log "bench: Fréchet"
[ -n "${SKIP_FRECHET:-}" ] || timeout 90 $PY bench/kernels.py --device cuda --only frechet --dims 16,64,128,512

log "runs: p = 1 and p = 0 side by side, $MIN min of training each"
# the recipe is the paper-short preset (ddmini/config.py); only the budget and the cosine horizon vary
COMMON=(--preset paper-short --device cuda --run-dir "$RUN" --train-steps "$STEPS" --train-time-budget "$MIN")
export OMP_NUM_THREADS=6
timeout "$(left)" $PY -m ddmini run --poison 1 "${COMMON[@]}" > "$OUT/p1.log" 2>&1 &
P1=$!
sleep 3  # p = 1 takes the classifier and attack locks first; p = 0 waits, then finds them cached
timeout "$(left)" $PY -m ddmini run --poison 0 "${COMMON[@]}" > "$OUT/p0.log" 2>&1 &
P0=$!

log "CUDA tests (beside the runs)"
OMP_NUM_THREADS=4 timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_ext.py \
  tests/test_metrics.py tests/test_diffusion.py 2>&1 | tail -25

wait $P1; echo "p = 1 exit $?"
wait $P0; echo "p = 0 exit $?"
log "runs done"
tail -30 "$OUT/p1.log"
tail -30 "$OUT/p0.log"
tar czf "$OUT/runs.tgz" --exclude='*.pt' "$RUN" 2>/dev/null
tar czf "$OUT/samples.tgz" "$RUN"/cache/samples-*.pt 2>/dev/null
log end
