#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the suite into it.
# Sourced by the other scripts; safe to run on its own: `bash scripts/setup_env.sh`.
#   VENV=.venv            where the environment lives
#   PYTHON=python3        the interpreter that creates it (3.10+)
#   TORCH_SPEC=...        torch requirement on a machine without a GPU (default: the CPU build torch==2.13.0)
# The order matters: torch goes in first and alone, so nothing later pulls a multi-GB CUDA build or a
# torchvision that breaks beside the CPU build (docs/install.md). lmms-eval goes in with --no-deps, its real needs
# come from the `eval` extra.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
LMMS_EVAL_SPEC="lmms-eval==0.7.3"

stamp_of() { cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -c1-16; }
STAMP="$VENV/.setup-$(stamp_of)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if [ ! -f "$STAMP" ]; then
  start=$(date +%s)
  "${PIP[@]}" install -q -U pip
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      echo "[setup] GPU found: installing the default (CUDA) torch build"
      "${PIP[@]}" install -q "${TORCH_GPU_SPEC:-torch>=2.4}"
    else
      spec="${TORCH_SPEC:-torch==2.13.0}"
      echo "[setup] no GPU: installing the CPU torch build ($spec)"
      "${PIP[@]}" install -q "$spec" \
        || "${PIP[@]}" install -q "$spec" --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
  echo "[setup] installing the suite (editable) with the eval and dev extras"
  "${PIP[@]}" install -q -e "$ROOT[eval,dev]"
  "${PIP[@]}" install -q --no-deps "$LMMS_EVAL_SPEC"
  rm -f "$VENV"/.setup-*
  touch "$STAMP"
  echo "[setup] done in $(( $(date +%s) - start )) s; venv size $(du -sh "$VENV" | cut -f1)"
fi
export PATH="$VENV/bin:$PATH"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
