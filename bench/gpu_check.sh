#!/usr/bin/env bash
# One prepared GPU check: parity + timings of every engine on the staged ICHNet model.
#
#   bash bench/gpu_check.sh                 # on the GPU machine, from the repo root (<= 8 min)
#   DEVICE=cpu bash bench/gpu_check.sh      # tiny CPU subset: proves the script runs
#
# Writes $OUT/gpu_check.md (OUT defaults to ./gpu_check_out). Needs torch, numpy, onnx,
# onnxscript, onnxruntime(-gpu); not pydicom or scipy. Every measurement is guarded in Python;
# this wrapper only adds a hard wall-clock limit and never aborts on a failed step (no `set -e`).
set -u

DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-$PWD/gpu_check_out}"
if [ "$DEVICE" = "cuda" ]; then
    BUDGET_S="${BUDGET_S:-400}"      # measurements stop starting after this
    HARD_LIMIT_S="${HARD_LIMIT_S:-470}"  # the whole script ends by this (8 min with margin)
    BLOCK_IMPORTS="${BLOCK_IMPORTS:-}"
else
    BUDGET_S="${BUDGET_S:-240}"
    HARD_LIMIT_S="${HARD_LIMIT_S:-420}"
    BLOCK_IMPORTS="${BLOCK_IMPORTS:-pydicom,scipy}"  # as on the GPU machine
fi
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    for candidate in /opt/torch/.venv/bin/python3 .venv/bin/python python3; do
        if command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ]; then
            PYTHON="$candidate"
            break
        fi
    done
fi
mkdir -p "$OUT"
export DEVICE OUT BUDGET_S BLOCK_IMPORTS
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

echo "gpu_check: python $PYTHON, device $DEVICE, budget ${BUDGET_S}s, hard limit ${HARD_LIMIT_S}s, out $OUT"
"$PYTHON" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' \
    || echo "gpu_check: torch import failed"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

timeout --signal=TERM --kill-after=15 "$HARD_LIMIT_S" "$PYTHON" bench/gpu_check.py 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "gpu_check: python exited with status $status (124 = hard time limit); partial table kept"
fi
echo
cat "$OUT/gpu_check.md" 2>/dev/null || echo "gpu_check: no table was written"
exit 0
