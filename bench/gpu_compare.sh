#!/usr/bin/env bash
# The prepared call for a lent GPU machine (one NVIDIA GPU + 16 cores, no network, 15 minutes of
# device time per session, files of at most 16 MiB come back): continue the 1.0 mm comparison
# of issue 8 item 6 (training/configs/compare_diag.yaml), which takes about 50 minutes of one
# CPU core per ICHNet variant here.
#   1. the compare config is copied with the GPU's settings only (14 case-preparation workers,
#      non-deterministic kernels, 4 threads): none of them is part of a run's config hash, so
#      the reports it writes are those the CPU would reuse, and the runs already committed under
#      docs/results/compare_diag/ are skipped here too;
#   2. `ichnet-train compare` runs for at most COMPARE_MIN minutes; SIGINT then stops the run in
#      progress unevaluated (its report is not written), every run finished before is kept;
#   3. $OUT gets compare_diag.tar.gz (each finished run's report and run.json; the table
#      compare_diag.md once all seven are done) and the log.
# Usage on the device (from the repo root):
#   bash bench/gpu_compare.sh                                   # COMPARE_MIN=8 by default
#   CONFIG=training/configs/compare_cpu.yaml DEVICE=cpu COMPARE_MIN=4 MAX_STEPS=2 \
#       REPORTS=/tmp/cmp WORKERS=2 bash bench/gpu_compare.sh  # smoke test here (96x96 models;
#                                                             # capped runs are never reused)
# Then here: tar -xzf <files_at>/compare_diag.tar.gz (it unpacks docs/results/compare_diag/),
# check the new run.json files and commit them.
# Python, wheels the GPU image lacks (.whl/) and PYTHONPATH: bench/gpu_env.sh.
set -u
OUT="${OUT:-$PWD/gpu_compare_out}"
COMPARE_MIN="${COMPARE_MIN:-8}"
WORKERS="${WORKERS:-14}"
DEVICE="${DEVICE:-cuda}"
REPORTS="${REPORTS:-docs/results/compare_diag}"
MAX_STEPS="${MAX_STEPS:-}"
CONFIG="${CONFIG:-training/configs/compare_diag.yaml}"
DERIVED="${CONFIG%.yaml}_device.yaml"
mkdir -p "$OUT"
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh
# The derived config sits beside the original, so its `base: cpu_diag.yaml` still resolves.
"$PYTHON" - "$CONFIG" "$DERIVED" "$WORKERS" "$DEVICE" "$REPORTS" <<'EOF' || exit 1
import sys

import yaml

source, target, workers, device, reports = sys.argv[1:]
with open(source, encoding="utf-8") as f:
    compare = yaml.safe_load(f)
overrides = compare.setdefault("overrides", {})
overrides.update(device=device, deterministic=device == "cpu", cpu_threads=4)
overrides.setdefault("data", {})["prepare_workers"] = int(workers)
compare["output_dir"] = f"{compare['output_dir']}_device"
compare["reports_dir"] = reports
compare["results_md"] = f"{reports}.md"
with open(target, "w", encoding="utf-8") as f:
    yaml.safe_dump(compare, f, sort_keys=False)
EOF
CAP=()
[ -n "$MAX_STEPS" ] && CAP=(--max-steps "$MAX_STEPS")
started=$(date +%s)
# SIGINT at the time box: the trainer saves its checkpoint and the compare stops without
# evaluating the run cut short (exit status 1 with "compare stopped by a signal").
timeout --signal=INT --kill-after=60 "$(( ${COMPARE_MIN%.*} * 60 ))" "${TRAIN[@]}" \
    compare --config "$DERIVED" "${CAP[@]}" > "$OUT/compare.log" 2>&1
echo "compare exit status $? after $(( $(date +%s) - started )) s"
grep -E "reusing|stopped by a signal|wrote|Error" "$OUT/compare.log" | tail -n 12
rm -f "$DERIVED"
ls "$REPORTS"/*/run.json 2>/dev/null
tar -czf "$OUT/compare_diag.tar.gz" "$REPORTS" "$REPORTS.md" 2>/dev/null \
    || tar -czf "$OUT/compare_diag.tar.gz" "$REPORTS"
ls -la "$OUT"
exit 0
