#!/usr/bin/env bash
# The README's main command: the whole pipeline on the embedded default (the toy world), on CPU, offline.
#   toy world -> toy CLIP -> GenHancer stage 1 -> stage 2 -> export -> MMVP-VLM before/after
#   -> two toy LLaVAs (baseline vs enhanced encoder) -> lmms-eval toy suite -> leaderboard
# Every step caches its output under runs/ (RUN_ROOT), so a second run only redoes what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
start=$(date +%s)
bash scripts/enhance_clip.sh
bash scripts/finetune_llava.sh
bash scripts/compare_leaderboard.sh
echo "[demo] whole pipeline finished in $(( $(date +%s) - start )) s"
