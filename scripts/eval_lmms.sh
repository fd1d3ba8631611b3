#!/usr/bin/env bash
# Evaluate an HF LLaVA directory with lmms-eval (thin wrapper: every setting is a flag of eval.lmms run).
#   bash scripts/eval_lmms.sh --model LLAVA_DIR --suite toy --world runs/toyworld --out runs/toy/lmms/NAME
#   bash scripts/eval_lmms.sh --model LLAVA_DIR --suite vision-centric --out runs/real/lmms/NAME [--mirror DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
exec python -m eval.lmms run "$@"
