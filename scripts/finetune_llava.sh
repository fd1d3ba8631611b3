#!/usr/bin/env bash
# Put a (GenHancer-enhanced) vision encoder into a LLaVA-1.5-style model: build -> pretrain -> finetune.
#
#   bash scripts/finetune_llava.sh
#       The toy world on CPU (a few minutes): two toy LLaVAs trained on identical data and seeds, one on the
#       baseline toy CLIP (runs/toy/clip), one on its GenHancer export (runs/toy/encoder; made by
#       scripts/enhance_clip.sh when missing), both evaluated on the lmms-eval toy suite (held-out toy
#       questions per type, toy MMVP, POPE, CV-Bench) and compared question by question (paired bootstrap
#       95% intervals). The two pipelines run side by side, one CPU thread each.
#       Outputs: runs/toy/llava-<name>/ (models), runs/toy/lmms/<name>/ (eval runs, reused by
#       scripts/compare_leaderboard.sh), runs/toy/lmms/compare.json.
#   SEEDS="0 1 2" bash scripts/finetune_llava.sh
#       The same for several training seeds (seed s > 0: runs/toy/llava-<name>-seed<s>); the comparison
#       reports means over seeds with intervals that cover seeds and questions.
#   CONFIG=configs/llava/vicuna-7b.yaml ENCODER=runs/openai-clip-l14-336/encoder NUM_GPUS=8 \
#   bash scripts/finetune_llava.sh
#       The LLaVA-1.5 recipe (torchrun, one process per GPU; DeepSpeed ZeRO-2 then ZeRO-3 from the YAML).
#   NUM_NODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> NUM_GPUS=8 CONFIG=... bash scripts/finetune_llava.sh
#       Several machines: run on every node, RUN_DIR on a shared file system (docs/llava.md).
#
# Environment variables only choose files, paths, seeds and the launch size; every hyperparameter is in the
# YAML (the toy values in configs/llava/toy.yaml, the toy LLM's in configs/llava/toy-llm.yaml).
#   CONFIG    run config (default configs/llava/toy.yaml)   ENCODER  model.encoder override (dir or hub id)
#   LLM       model.llm override                             RUN_DIR  run_dir override
#   NUM_GPUS  processes per node (0 = one plain process)     NUM_NODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
#   Toy only: WORLD (runs/toyworld), BASELINE (runs/toy/clip), ENHANCED (runs/toy/encoder), LLM (runs/toy/llm),
#             SEEDS ("0"), RUN_ROOT (runs/toy)
set -euo pipefail
DEFAULT_MASTER_PORT=29501
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONFIG="${CONFIG:-configs/llava/toy.yaml}"
NAME="$(basename "$CONFIG" .yaml)"

if [ "$NAME" != toy ]; then
  RUN_DIR="${RUN_DIR:-runs/llava-$NAME}"
  OVR=("run_dir=$RUN_DIR")
  [ -n "${ENCODER:-}" ] && OVR+=("model.encoder=$ENCODER")
  [ -n "${LLM:-}" ] && OVR+=("model.llm=$LLM")
  if [ "$NODE_RANK" = 0 ] && [ ! -f "$RUN_DIR/pretrain/assembled/config.json" ]; then
    step "building the LLaVA -> $RUN_DIR/pretrain/assembled"
    python -m llava_integration.build --config "$CONFIG" --out "$RUN_DIR/pretrain/assembled" "${OVR[@]}"
  fi
  while [ ! -f "$RUN_DIR/pretrain/assembled/config.json" ]; do sleep 10; done  # other nodes wait for node 0
  step "stage pretrain"
  launch_module llava_integration.train --config "$CONFIG" stage=pretrain "${OVR[@]}"
  step "stage finetune"
  launch_module llava_integration.train --config "$CONFIG" stage=finetune "${OVR[@]}"
  step "done: $RUN_DIR/finetune/model"
  exit 0
fi

# ------------------------------------------------------------------------------------------- toy world
WORLD="${WORLD:-runs/toyworld}"
BASELINE="${BASELINE:-runs/toy/clip}"
ENHANCED="${ENHANCED:-runs/toy/encoder}"
LLM="${LLM:-runs/toy/llm}"
RUN_ROOT="${RUN_ROOT:-runs/toy}"
read -r -a SEED_LIST <<< "${SEEDS:-0}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # two pipelines side by side on 2 cores: one thread each
if [ ! -f "$WORLD/world.json" ]; then
  step "building the toy world -> $WORLD"
  python -m toyworld build --out "$WORLD"
fi
# The LLaVA JSON and the lmms-eval parquet of this version of the writers (rewritten when stale)
python -m toyworld.llava_data --world "$WORLD" --if-stale
python -m toyworld.lmms_data --world "$WORLD" --if-stale
if [ ! -f "$BASELINE/config.json" ] || [ ! -f "$ENHANCED/config.json" ]; then
  step "no toy CLIP / enhanced encoder yet: running scripts/enhance_clip.sh"
  WORLD="$WORLD" bash scripts/enhance_clip.sh
fi
step "toy LLM -> $LLM (trained once per config and world)"
timed "toy LLM" python -m toyworld pretrain-llm --world "$WORLD" --out "$LLM" --config configs/llava/toy-llm.yaml

run_name() {  # run_name NAME SEED: seed 0 keeps the plain name (the leaderboard's default rows)
  if [ "$2" = 0 ]; then echo "$1"; else echo "$1-seed$2"; fi
}

pipeline() {  # pipeline NAME ENCODER SEED: fresh run dir, build, both stages, toy suite (log in the run dir)
  local name run eval_dir TIMINGS
  name="$(run_name "$1" "$3")"
  run="$RUN_ROOT/llava-$name"
  eval_dir="$RUN_ROOT/lmms/$name"
  TIMINGS="$run/timings.tsv"  # read by timed
  rm -rf "$run" "$eval_dir" && mkdir -p "$run"
  local ovr=("run_dir=$run" "seed=$3" "model.encoder=$2" "model.llm=$LLM"
             "pretrain.data.path=$WORLD/llava/pretrain.json" "pretrain.data.image_root=$WORLD"
             "finetune.data.path=$WORLD/llava/finetune.json" "finetune.data.image_root=$WORLD")
  {  # set -e does not act inside an || list: every stage is chained with &&
    timed build python -m llava_integration.build --config "$CONFIG" --out "$run/pretrain/assembled" "${ovr[@]}" &&
    timed pretrain python -m llava_integration.train --config "$CONFIG" stage=pretrain "${ovr[@]}" &&
    timed finetune python -m llava_integration.train --config "$CONFIG" stage=finetune "${ovr[@]}" &&
    timed "toy suite" python -m eval.lmms run --model "$run/finetune/model" --suite toy --world "$WORLD" \
      --out "$eval_dir" --batch-size 32
  } > "$run/log.txt" 2>&1 || { echo "--- $name failed; end of $run/log.txt:"; tail -n 30 "$run/log.txt"; return 1; }
}

base_runs=()
enh_runs=()
for seed in "${SEED_LIST[@]}"; do
  step "seed $seed: toy LLaVAs on $BASELINE (baseline) and $ENHANCED (enhanced), same data and seed"
  pipeline baseline "$BASELINE" "$seed" & pid_base=$!
  pipeline enhanced "$ENHANCED" "$seed" & pid_enh=$!
  status=0
  wait "$pid_base" || status=1
  wait "$pid_enh" || status=1
  [ "$status" = 0 ] || exit 1
  base_runs+=("$RUN_ROOT/lmms/$(run_name baseline "$seed")")
  enh_runs+=("$RUN_ROOT/lmms/$(run_name enhanced "$seed")")
  for n in baseline enhanced; do
    run="$RUN_ROOT/llava-$(run_name "$n" "$seed")"
    python - "$run" <<'EOF'
import json, sys
run = sys.argv[1]
for stage in ("pretrain", "finetune"):
    extra = json.load(open(f"{run}/{stage}/model/provenance.json"))["extra"]
    print(f"  {run:28s} {stage:8s} {extra['steps']:4d} steps  {extra['train_seconds']:6.1f} s  "
          f"{extra['tokens_per_second']:8.0f} tokens/s  loss {extra['train_loss']}")
rows = [line.split("\t") for line in open(f"{run}/timings.tsv").read().splitlines() if line]
print("  wall (CPU) s: " + ", ".join(f"{label} {wall} ({cpu})" for label, wall, cpu in rows))
EOF
  done
done

step "lmms-eval toy suite: enhanced vs baseline, question by question"
joined() { local IFS=,; echo "$*"; }
python -m eval.lmms compare --runs "baseline=$(joined "${base_runs[@]}")" "enhanced=$(joined "${enh_runs[@]}")" \
  --baseline baseline --out "$RUN_ROOT/lmms/compare.json"
step "done"
