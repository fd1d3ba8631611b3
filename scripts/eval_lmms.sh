#!/usr/bin/env bash
# Evaluate an HF LLaVA directory with lmms-eval (thin wrapper: every setting is a flag of eval.lmms run).
#   bash scripts/eval_lmms.sh --model LLAVA_DIR --suite toy --world runs/toyworld --out runs/toy/lmms/NAME
#   bash scripts/eval_lmms.sh --model LLAVA_DIR --suite vision-centric --out runs/real/lmms/NAME [--mirror DIR]
# Compare runs question by question: python -m eval.lmms compare --runs a=RUN_A b=RUN_B
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
step "python -m eval.lmms run $*"
timed "eval.lmms run" python -m eval.lmms run "$@"
