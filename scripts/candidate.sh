#!/usr/bin/env bash
# The shipping chain for a training checkpoint (docs/results.md, "Shipping 0.5.0"): a candidate
# replaces the bundled weights only when it beats them on every headline figure, so every
# candidate is judged the same way, on the same cases:
#   1. operating points on the first 128 validation series (any: highest specificity with
#      sensitivity >= 0.95; subtypes: Youden), from the checkpoint's moving-average weights;
#   2. the test split at those operating points, with 1000 bootstrap resamples (Tables 2 and 3,
#      volumes per compartment, 95 % intervals);
#   3. export as a weights file carrying the operating points and the test figures;
#   4. that weights file on the real normal head CT (../shared/data/real/head_ct_ge_tilted).
# About 35 minutes on one core at 1.0 mm.
#
#   scripts/candidate.sh CHECKPOINT OUT_DIR VERSION [CONFIG]
#   e.g. scripts/candidate.sh runs/cpu_diag/checkpoints/last.pt runs/eval/run10_s5640 \
#        0.6.0+synthetic.cpu-diag
#
# VAL_CASES (default 128) and TEST_CASES (default: the whole test split) shrink it for a smoke run.
# Last it prints (and writes to OUT_DIR/headline.md) every headline figure beside the shipped
# weights' (SHIPPED_METRICS, SHIPPED_REAL_CT) and whether any is worse; nothing here installs
# anything.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,20p' "$0" >&2
    exit 2
fi
checkpoint=$1 out=$2 version=$3 config=${4:-training/configs/cpu_diag.yaml}
train=${ICHNET_TRAIN:-.venv/bin/ichnet-train}
eval=${ICHNET_EVAL:-.venv/bin/ichnet-eval}
python=${PYTHON:-.venv/bin/python}
threads=${THREADS:-1}
# the shipped weights' reports (docs/results.md, "Headline"); replaced when a candidate ships
shipped_metrics=${SHIPPED_METRICS:-docs/results/shipped_060_test_metrics.json}
shipped_real_ct=${SHIPPED_REAL_CT:-docs/results/shipped_060_real_ct_report.json}
test_cases=()
[ -n "${TEST_CASES:-}" ] && test_cases=(--cases "$TEST_CASES")
mkdir -p "$out"
cp "$checkpoint" "$out/checkpoint.pt"  # the run keeps writing its own copy
sha=$(sha256sum "$out/checkpoint.pt" | cut -c1-12)
echo "== $(date -u +%H:%M) operating points (checkpoint sha256 $sha)"
"$train" operating-points --config "$config" --checkpoint "$out/checkpoint.pt" --split val \
    --cases "${VAL_CASES:-128}" --threads "$threads" --out "$out/operating_points.json"
echo "== $(date -u +%H:%M) test split"
"$eval" --config "$config" --checkpoint "$out/checkpoint.pt" --split test --bootstrap 1000 \
    "${test_cases[@]}" --operating-points "$out/operating_points.json" --threads "$threads" \
    --out "$out/test"
echo "== $(date -u +%H:%M) export"
"$train" export --checkpoint "$out/checkpoint.pt" --out "$out/weights.pt" --version "$version" \
    --operating-points "$out/operating_points.json" --evaluation "$out/test/metrics.json" \
    --description "ICHNet candidate $version, checkpoint $sha (synthetic data only; not a medical device)" \
    --trained-on "synthetic head CT (ichnet_core.synthetic)"
echo "== $(date -u +%H:%M) real normal CT"
"$python" -m training.real_ct ../shared/data/real/head_ct_ge_tilted --weights "$out/weights.pt" \
    --out "$out/real_ct"
echo "== $(date -u +%H:%M) done: $out/test/tables.md, $out/real_ct/report.json"
# 5. the shipping rule: no headline figure worse than the shipped weights' (training/headline.py)
"$python" -m training.headline "$out" --shipped-metrics "$shipped_metrics" \
    --shipped-real-ct "$shipped_real_ct" | tee "$out/headline.md" || true
