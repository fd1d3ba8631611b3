#!/usr/bin/env bash
# Choose the stage-2 length on a validation benchmark; report the choice on the test benchmark.
#
#   bash scripts/stage2_sweep.sh
#       Toy: the encoders kept by runs/toy/stage2 (schedule.stage2.eval_at) are exported, scored on the toy
#       world's validation MMVP-VLM (runs/toyworld/mmvp_vlm_val, its own seed) and on the 150-pair decision
#       set (runs/toyworld/mmvp_vlm_decision); the best validation step is reported on the test set next to
#       the fixed-length run. Needs a finished stage 2 (scripts/enhance_clip.sh).
#   RUN=runs/openai-clip-l14/stage2 VAL=/data/my_val_mmvp TEST=/data/MMVP_VLM bash scripts/stage2_sweep.sh
#       A paper run: VAL is a folder in MMVP-VLM's layout that you name (never the test benchmark).
#
#   RUN   stage-2 run directory (runs/toy/stage2)      OUT   results (RUN/sweep_eval)
#   VAL   validation MMVP-VLM folder                    TEST  test MMVP-VLM folder
#   FIXED the fixed-length step to compare with (default: the run's last step)
# Outputs: OUT/step-NNNNNN/{val,test}.json, OUT/sweep.{json,md,png} (python -m eval.sweep).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN="${RUN:-runs/toy/stage2}"
VAL="${VAL:-runs/toyworld/mmvp_vlm_val}"
TEST="${TEST:-runs/toyworld/mmvp_vlm_decision}"
OUT="${OUT:-$RUN/sweep_eval}"
if [ "$(realpath -m "$VAL")" = "$(realpath -m "$TEST")" ]; then
  echo "error: VAL and TEST are the same folder ($VAL): the stage-2 length must be chosen on another set" >&2
  exit 2
fi
shopt -s nullglob
snapshots=("$RUN"/sweep/step-*)
if [ "${#snapshots[@]}" = 0 ]; then
  echo "error: $RUN/sweep/ holds no step-NNNNNN snapshots: train stage 2 with schedule.stage2.eval_at set" >&2
  exit 2
fi
for snap in "${snapshots[@]}"; do
  name="$(basename "$snap")"
  if [ -f "$OUT/$name/test.json" ] && [ "$OUT/$name/test.json" -nt "$snap" ]; then continue; fi
  step "$name: export + MMVP-VLM on validation and test"
  later genhancer.export --run "$snap" --out "$OUT/$name/encoder"
  later eval.mmvp_vlm --model "$OUT/$name/encoder" --benchmark "$VAL" --out "$OUT/$name/val.json"
  later eval.mmvp_vlm --model "$OUT/$name/encoder" --benchmark "$TEST" --out "$OUT/$name/test.json"
  run_later > /dev/null  # one process per snapshot (its tables are in the JSON files)
  rm -rf "$OUT/$name/encoder"  # the snapshot re-exports it in seconds
done
python -m eval.sweep --root "$OUT" ${FIXED:+--fixed-step "$FIXED"}
step "done: $OUT/sweep.md, $OUT/sweep.png"
