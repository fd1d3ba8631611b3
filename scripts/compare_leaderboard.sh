#!/usr/bin/env bash
# Leaderboard: our MLLMs on lmms-eval suites and our encoders on MMVP-VLM, beside published references.
#   bash scripts/compare_leaderboard.sh
#       The toy runs: the two toy LLaVAs of finetune_llava.sh (baseline vs enhanced encoder) on the lmms-eval
#       toy suite, and the toy encoders' MMVP-VLM results from enhance_clip.sh. A run already evaluated
#       (finetune_llava.sh evaluates its models) is reused. Output: runs/toy/leaderboard/ (markdown printed,
#       CSV, JSON, PNG) and the question-by-question comparison with paired bootstrap intervals
#       (runs/toy/leaderboard/compare.json).
#   bash scripts/compare_leaderboard.sh --runs runs/eval/a runs/eval/b r.json [--baseline NAME] --out DIR
#       Any lmms-eval run dirs (python -m eval.lmms run) and MMVP-VLM RESULT.json files.
# Environment variables (toy mode; all optional) only choose paths:
#   RUN_ROOT=runs/toy   WORLD=runs/toyworld   MODELS="baseline enhanced" (runs/toy/llava-<name>/finetune/model)
#   BASELINE=baseline   LMMS_FLAGS="--limit 20" (extra flags of eval.lmms run)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "$#" -gt 0 ]; then exec python -m eval.leaderboard "$@"; fi

RUN_ROOT="${RUN_ROOT:-runs/toy}"
WORLD="${WORLD:-runs/toyworld}"
BASELINE="${BASELINE:-baseline}"
read -r -a MODELS <<< "${MODELS:-baseline enhanced}"
read -r -a LMMS_EXTRA <<< "${LMMS_FLAGS:-}"

runs=()
for name in "${MODELS[@]}"; do
  model="$RUN_ROOT/llava-$name/finetune/model"
  if [ ! -f "$model/config.json" ]; then
    echo "error: no toy LLaVA at $model; run scripts/finetune_llava.sh first" >&2
    exit 2
  fi
  out="$RUN_ROOT/lmms/$name"
  if [ ! -f "$out/results.json" ] || [ "$model/config.json" -nt "$out/results.json" ]; then
    step "lmms-eval toy suite: $model -> $out"
    timed "toy suite ($name)" python -m eval.lmms run --model "$model" --suite toy --world "$WORLD" --out "$out" "${LMMS_EXTRA[@]}"
  fi
  runs+=("$out")
done
for result in "$RUN_ROOT/eval/mmvp_before.json" "$RUN_ROOT/eval/mmvp_after.json"; do
  if [ -f "$result" ]; then runs+=("$result"); fi
done
step "leaderboard -> $RUN_ROOT/leaderboard"
python -m eval.leaderboard --runs "${runs[@]}" --baseline "$BASELINE" --out "$RUN_ROOT/leaderboard"
if [ "${#MODELS[@]}" -gt 1 ]; then
  step "question by question vs $BASELINE (paired bootstrap 95% intervals) -> $RUN_ROOT/leaderboard/compare.json"
  named=()
  for name in "${MODELS[@]}"; do named+=("$name=$RUN_ROOT/lmms/$name"); done
  python -m eval.lmms compare --runs "${named[@]}" --baseline "$BASELINE" --out "$RUN_ROOT/leaderboard/compare.json"
fi
