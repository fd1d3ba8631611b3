#!/usr/bin/env bash
# Put a (GenHancer-enhanced) vision encoder into a LLaVA-1.5-style model: assemble -> pretrain -> finetune.
#
#   bash scripts/finetune_llava.sh
#       The toy world on CPU (a few minutes): two toy LLaVAs trained on identical data and seeds, one on the
#       baseline toy CLIP (runs/toy/clip), one on its GenHancer export (runs/toy/encoder; made by
#       scripts/enhance_clip.sh when missing), then an accuracy table per question type on held-out toy
#       questions. The two pipelines run side by side, one CPU thread each. Outputs: runs/toy/llava-*/.
#   CONFIG=configs/llava/vicuna-7b.yaml ENCODER=runs/openai-clip-l14-336/encoder NUM_GPUS=8 \
#   bash scripts/finetune_llava.sh
#       The LLaVA-1.5 recipe (torchrun, one process per GPU; DeepSpeed ZeRO-2 then ZeRO-3 from the YAML).
#   NUM_NODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> NUM_GPUS=8 CONFIG=... bash scripts/finetune_llava.sh
#       Several machines: run on every node, RUN_DIR on a shared file system (docs/llava.md).
#
# Environment variables only choose files, paths and the launch size; every hyperparameter is in the YAML.
#   CONFIG    run config (default configs/llava/toy.yaml)   ENCODER  model.encoder override (dir or hub id)
#   LLM       model.llm override                             RUN_DIR  run_dir override
#   NUM_GPUS  processes per node (0 = one plain process)     NUM_NODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
#   Toy only: WORLD (runs/toyworld), BASELINE (runs/toy/clip), ENHANCED (runs/toy/encoder), LLM (runs/toy/llm)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"

CONFIG="${CONFIG:-configs/llava/toy.yaml}"
NAME="$(basename "$CONFIG" .yaml)"
NUM_GPUS="${NUM_GPUS:-0}"
NUM_NODES="${NUM_NODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29501}"
start=$(date +%s)
step() { echo "[finetune_llava $(( $(date +%s) - start ))s] $*"; }

train() {  # train ARGS...: one stage, launched for the requested size
  if [ "$NUM_GPUS" -gt 0 ]; then
    torchrun --nproc_per_node "$NUM_GPUS" --nnodes "$NUM_NODES" --node_rank "$NODE_RANK" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" -m llava_integration.train "$@"
  else
    python -m llava_integration.train "$@"
  fi
}

if [ "$NAME" != toy ]; then
  RUN_DIR="${RUN_DIR:-runs/llava-$NAME}"
  OVR=("run_dir=$RUN_DIR")
  [ -n "${ENCODER:-}" ] && OVR+=("model.encoder=$ENCODER")
  [ -n "${LLM:-}" ] && OVR+=("model.llm=$LLM")
  if [ "$NODE_RANK" = 0 ] && [ ! -f "$RUN_DIR/pretrain/assembled/config.json" ]; then
    step "assembling the LLaVA -> $RUN_DIR/pretrain/assembled"
    python -m llava_integration.build --config "$CONFIG" --out "$RUN_DIR/pretrain/assembled" "${OVR[@]}"
  fi
  while [ ! -f "$RUN_DIR/pretrain/assembled/config.json" ]; do sleep 10; done  # other nodes wait for node 0
  step "stage pretrain"
  train --config "$CONFIG" stage=pretrain "${OVR[@]}"
  step "stage finetune"
  train --config "$CONFIG" stage=finetune "${OVR[@]}"
  step "done: $RUN_DIR/finetune/model"
  exit 0
fi

# ------------------------------------------------------------------------------------------- toy world
WORLD="${WORLD:-runs/toyworld}"
BASELINE="${BASELINE:-runs/toy/clip}"
ENHANCED="${ENHANCED:-runs/toy/encoder}"
LLM="${LLM:-runs/toy/llm}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # two pipelines side by side on 2 cores: one thread each
if [ ! -f "$WORLD/world.json" ]; then
  step "building the toy world -> $WORLD"
  python -m toyworld build --out "$WORLD"
fi
if [ ! -f "$WORLD/llava/heldout.json" ]; then
  step "writing the toy LLaVA data -> $WORLD/llava"
  python -m toyworld.llava_data --world "$WORLD"
fi
if [ ! -f "$BASELINE/config.json" ] || [ ! -f "$ENHANCED/config.json" ]; then
  step "no toy CLIP / enhanced encoder yet: running scripts/enhance_clip.sh"
  WORLD="$WORLD" bash scripts/enhance_clip.sh
fi
if [ ! -f "$LLM/config.json" ]; then
  step "building the toy LLM -> $LLM"
  python -m toyworld pretrain-llm --world "$WORLD" --out "$LLM"
fi

pipeline() {  # pipeline NAME ENCODER: fresh run dir, both stages, held-out evaluation (log in the run dir)
  local run="runs/toy/llava-$1"
  rm -rf "$run" && mkdir -p "$run"
  local ovr=("run_dir=$run" "model.encoder=$2" "model.llm=$LLM"
             "pretrain.data.path=$WORLD/llava/pretrain.json" "pretrain.data.image_root=$WORLD"
             "finetune.data.path=$WORLD/llava/finetune.json" "finetune.data.image_root=$WORLD")
  {
    python -m llava_integration.train --config "$CONFIG" stage=pretrain "${ovr[@]}"
    python -m llava_integration.train --config "$CONFIG" stage=finetune "${ovr[@]}"
    python -m llava_integration.evaluate --model "$run/finetune/model" --data "$WORLD/llava/heldout.json" \
      --image-root "$WORLD" --out "$run/heldout.json"
  } > "$run/log.txt" 2>&1 || { echo "--- $1 failed; end of $run/log.txt:"; tail -n 30 "$run/log.txt"; return 1; }
}

step "training toy LLaVAs: baseline ($BASELINE) and enhanced ($ENHANCED), same data and seeds"
pipeline baseline "$BASELINE" & pid_base=$!
pipeline enhanced "$ENHANCED" & pid_enh=$!
status=0
wait "$pid_base" || status=1
wait "$pid_enh" || status=1
[ "$status" = 0 ] || exit 1
step "held-out toy questions, exact-match accuracy (%)"
python -m llava_integration.evaluate compare runs/toy/llava-baseline/heldout.json runs/toy/llava-enhanced/heldout.json \
  --names baseline enhanced
for n in baseline enhanced; do
  python - "$n" <<'EOF'
import json, sys
name = sys.argv[1]
for stage in ("pretrain", "finetune"):
    extra = json.load(open(f"runs/toy/llava-{name}/{stage}/model/provenance.json"))["extra"]
    print(f"  {name:9s} {stage:8s} {extra['steps']:4d} steps  {extra['train_seconds']:6.1f} s  "
          f"{extra['tokens_per_second']:8.0f} tokens/s  loss {extra['train_loss']}")
EOF
done
step "done"
