#!/usr/bin/env bash
# MMVP-VLM for an HF CLIP/SigLIP directory (thin wrapper: every setting is a flag of eval.mmvp_vlm).
#   bash scripts/eval_mmvp_vlm.sh --model MODEL_DIR --benchmark BENCH_DIR --out RESULT.json [--plot PNG]
#   bash scripts/eval_mmvp_vlm.sh --compare BEFORE.json AFTER.json [--labels before after] [--plot PNG]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
exec python -m eval.mmvp_vlm "$@"
