#!/usr/bin/env bash
# Toy-world leaderboard: the toy LLaVAs of finetune_llava.sh (baseline vs enhanced encoder) on the lmms-eval
# toy suite, the toy encoders' MMVP-VLM results, and the published references, in one table.
#   bash scripts/compare_leaderboard.sh                 # defaults below; a run already evaluated is reused
#   bash scripts/compare_leaderboard.sh --baseline NAME # extra flags go to `python -m eval.leaderboard`
# Where things are (environment variables, all optional):
#   RUN_ROOT=runs/toy    WORLD=$RUN_ROOT/world    LLAVA_ROOT=$RUN_ROOT/llava (one model dir per subfolder,
#   or its final/ folder)    MMVP_VLM_ROOT=$RUN_ROOT/mmvp_vlm (RESULT.json files)    BASELINE=baseline
#   LMMS_FLAGS="--batch-size 8" (extra flags of eval.lmms run, e.g. "--limit 20")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
RUN_ROOT="${RUN_ROOT:-runs/toy}"
WORLD="${WORLD:-$RUN_ROOT/world}"
LLAVA_ROOT="${LLAVA_ROOT:-$RUN_ROOT/llava}"
MMVP_VLM_ROOT="${MMVP_VLM_ROOT:-$RUN_ROOT/mmvp_vlm}"
BASELINE="${BASELINE:-baseline}"
read -r -a LMMS_EXTRA <<< "${LMMS_FLAGS:-}"

runs=()
shopt -s nullglob
for dir in "$LLAVA_ROOT"/*/; do
  name="$(basename "$dir")"
  model="${dir%/}"
  [ -f "$model/config.json" ] || model="$model/final"
  [ -f "$model/config.json" ] || { echo "[leaderboard] skip $dir (no config.json, nor final/config.json)"; continue; }
  out="$RUN_ROOT/lmms/$name"
  if [ ! -f "$out/results.json" ]; then
    echo "[leaderboard] lmms-eval toy suite: $model -> $out"
    python -m eval.lmms run --model "$model" --suite toy --world "$WORLD" --out "$out" "${LMMS_EXTRA[@]}"
  fi
  runs+=("$out")
done
for result in "$MMVP_VLM_ROOT"/*.json; do runs+=("$result"); done
if [ "${#runs[@]}" -eq 0 ]; then
  echo "error: no LLaVA directories under $LLAVA_ROOT and no MMVP-VLM results under $MMVP_VLM_ROOT;" \
       "run scripts/enhance_clip.sh and scripts/finetune_llava.sh first (or set LLAVA_ROOT / MMVP_VLM_ROOT)" >&2
  exit 2
fi
python -m eval.leaderboard --runs "${runs[@]}" --baseline "$BASELINE" --out "$RUN_ROOT/leaderboard" "$@"
