#!/usr/bin/env bash
# The prepared call for a lent GPU machine (one NVIDIA GPU + 16 cores, no network, 15 minutes of
# device time per session, files of at most 16 MiB come back): continue the long ICHNet run of
# issue 8 from the committed checkpoint and bring the new checkpoint back.
#   1. the training cases are generated and prepared by 14 worker processes (about a minute);
#   2. training resumes training/checkpoints/cpu_diag.pt (same config, same run: the config
#      hash ignores device and determinism) for at most TRAIN_MIN minutes, with fast kernels;
#   3. $OUT gets last.pt (the checkpoint to commit as training/checkpoints/cpu_diag.pt, about
#      19 MB since the ninth run's deeper encoder), metrics.csv, steps.csv, curves and the log.
# Usage on the device (from the repo root):
#   bash bench/gpu_train.sh                              # TRAIN_MIN=8 by default
#   DEVICE=cpu TRAIN_MIN=0.5 WORKERS=2 bash bench/gpu_train.sh   # smoke test here
# Then here: cp <files_at>/last.pt training/checkpoints/cpu_diag.pt, and note steps/hours.
# Python, wheels the GPU image lacks (.whl/) and PYTHONPATH: bench/gpu_env.sh.
set -u
OUT="${OUT:-$PWD/gpu_train_out}"
TRAIN_MIN="${TRAIN_MIN:-8}"
WORKERS="${WORKERS:-14}"
DEVICE="${DEVICE:-cuda}"
CONFIG=training/configs/cpu_diag.yaml
COMMITTED=training/checkpoints/cpu_diag.pt
RUN=runs/cpu_diag_gpu
mkdir -p "$OUT"
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh
INIT=()
[ -f "$COMMITTED" ] && INIT=(--init-from "$COMMITTED")
started=$(date +%s)
# The time box is inside the trainer (it saves last.pt and exits 0); the outer timeout only
# guards against a hang, with room for case preparation and one validation.
timeout --signal=TERM --kill-after=20 "$(( ${TRAIN_MIN%.*} * 60 + 240 ))" "${TRAIN[@]}" \
    --config "$CONFIG" --output-dir "$RUN" --device "$DEVICE" --fast-kernels \
    --prepare-workers "$WORKERS" --threads 2 --max-minutes "$TRAIN_MIN" "${INIT[@]}" \
    > "$OUT/train.log" 2>&1
echo "training exit status $? after $(( $(date +%s) - started )) s"
tail -n 12 "$OUT/train.log"
for file in checkpoints/last.pt metrics.csv steps.csv curves_loss.png curves_validation.png; do
    cp "$RUN/$file" "$OUT/" 2>/dev/null || echo "no $file"
done
ls -la "$OUT"
exit 0
