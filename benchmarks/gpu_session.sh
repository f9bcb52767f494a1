#!/bin/bash
# One GPU session's measurements of the prediction pipeline, as run on a lent H200
# (16 cores) on 2026-12-04; results in benchmarks/results/gpu_h200*.
#
#   OUT=folder bash benchmarks/gpu_session.sh
#
# Needs the project's dependencies importable by $PY (default python3) and py-spy on the
# PATH for the profile step. SITE_TAR names an optional tar.xz of a site-packages folder
# to unpack first (for a machine without a package index: wheels built elsewhere).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/geoseg-gpu}; mkdir -p "$OUT"
DEV=${DEV:-cuda}; REPS=${REPS:-12}; PY=${PY:-python3}
if [ -n "${SITE_TAR:-}" ]; then
  [ -d /tmp/site/rasterio ] || { mkdir -p /tmp/site && tar -xJf "$SITE_TAR" -C /tmp/site; }
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
fi
export PYTHONUNBUFFERED=1
B=benchmarks
step() { echo "== $1 $(date +%T)"; }
nproc; nvidia-smi -L 2>/dev/null
step "breakdown $DEV (default workers: cores + 1)"
timeout 100 $PY $B/inference_breakdown.py --device "$DEV" --reps "$REPS" --runs 3 --batch-size 16 \
  --json "$OUT/bd_cuda.json"
step "breakdown with the model replaced by a zero-cost stand-in"
timeout 100 $PY $B/inference_breakdown.py --null-model --reps "$REPS" --runs 3 --batch-size 16 \
  --json "$OUT/bd_null.json"
for w in 4 8; do
  step "breakdown $DEV, $w workers"
  timeout 60 $PY $B/inference_breakdown.py --device "$DEV" --reps "$REPS" --runs 2 --batch-size 16 \
    --workers $w
done
if command -v py-spy >/dev/null; then
  step "py-spy: the thread holding the GIL, then every thread (warm runs)"
  $PY $B/inference_breakdown.py --device "$DEV" --reps "$REPS" --runs 4 --batch-size 16 \
    > "$OUT/bd_spy.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do grep -q "warm-up:" "$OUT/bd_spy.log" && break; sleep 0.3; done
  timeout 30 py-spy record --gil -r 200 --format raw -o "$OUT/gil.txt" --pid $pid --duration 7
  timeout 30 py-spy record --idle --threads -r 100 --format raw -o "$OUT/all.txt" --pid $pid \
    --duration 4
  wait $pid
  cat "$OUT/bd_spy.log"
fi
step "gpu_check: CUDA fp32 / bf16 / CPU maps and the model alone"
timeout 150 $PY $B/gpu_check.py --reps "$REPS" --batch-size 16 --no-distributed \
  --json "$OUT/gpu_check.json"
step done
