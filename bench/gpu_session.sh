#!/usr/bin/env bash
# The single prepared call for a lent GPU machine (one NVIDIA GPU, no network):
#   1. a time-boxed ICHNet training run (training/configs/gpu_short.yaml), exported as fp16
#      weights (the candidate bundled weights) with its metrics and curves;
#   2. bench/gpu_check.sh (engine parity + timings).
# Everything worth keeping lands in $OUT (at most 8 files come back from the device tool).
#   bash bench/gpu_session.sh                       # on the GPU machine, from the repo root
#   DEVICE=cpu TRAIN_S=40 bash bench/gpu_session.sh # smoke test of the script on a CPU
# Python, wheels the GPU image lacks (.whl/) and PYTHONPATH: bench/gpu_env.sh.
set -u
OUT="${OUT:-$PWD/gpu_session_out}"
TRAIN_S="${TRAIN_S:-220}"
CHECK_BUDGET_S="${CHECK_BUDGET_S:-100}"
CHECK_LIMIT_S="${CHECK_LIMIT_S:-140}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT"
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh

echo "== training for at most ${TRAIN_S}s =="
timeout --signal=TERM --kill-after=10 "$TRAIN_S" "${TRAIN[@]}" --config training/configs/gpu_short.yaml \
    --no-resume --device "$DEVICE" > "$OUT/train.log" 2>&1
echo "training exit status $? (124 = stopped by the time box, as planned)"
tail -n 5 "$OUT/train.log"
run=runs/gpu_short
if [ -f "$run/checkpoints/last.pt" ]; then
    "${TRAIN[@]}" export --checkpoint "$run/checkpoints/last.pt" --out "$OUT/ichnet_synthetic.pt" \
        --version "1.0.0+synthetic.gpu-short" > "$OUT/export.json" 2>>"$OUT/train.log" \
        || echo "export failed (see train.log)"
    cp "$run/metrics.csv" "$OUT/" 2>/dev/null
    cp "$run/curves_loss.png" "$OUT/" 2>/dev/null
else
    echo "no checkpoint was written"
fi

echo "== gpu_check (budget ${CHECK_BUDGET_S}s) =="
DEVICE="$DEVICE" BUDGET_S="$CHECK_BUDGET_S" HARD_LIMIT_S="$CHECK_LIMIT_S" OUT=/tmp/gpu_check \
    PYTHON="$PYTHON" bash bench/gpu_check.sh > /dev/null 2>&1
cp /tmp/gpu_check/gpu_check.md "$OUT/" 2>/dev/null || echo "gpu_check wrote no table"
cat "$OUT/gpu_check.md" 2>/dev/null
ls -la "$OUT"
exit 0
