#!/usr/bin/env bash
# Enhance a CLIP-family vision encoder with GenHancer: stage 1 -> stage 2 -> export -> MMVP-VLM before/after.
#
#   bash scripts/enhance_clip.sh
#       The toy world end to end on CPU (a few minutes): build the world and pretrain the toy CLIP when
#       missing, stage 1, stage 2 (init_from stage 1), export, MMVP-VLM before/after table + chart,
#       zero-shot check, reconstruction grid, loss curves. Outputs under runs/toy/.
#   CONFIG=configs/genhancer/openai-clip-l14-336.yaml DATA=/data/cc3m/{00000..00331}.tar \
#   VAE=/models/FLUX.1-dev NUM_GPUS=8 MMVP=/data/MMVP_VLM bash scripts/enhance_clip.sh
#       The paper recipe through `accelerate launch` (configs/accelerate/single_node.yaml).
#   DENOISER=discrete bash scripts/enhance_clip.sh
#       The same toy run with the discrete denoiser (configs/genhancer/toy-discrete.yaml): shares the toy
#       world and toy CLIP, trains the toy VQ tokenizer once (runs/toy/vq), outputs under runs/toy-discrete/.
#   NUM_NODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> NUM_GPUS=8 ... bash scripts/enhance_clip.sh
#       Two machines (configs/accelerate/two_nodes.yaml); run on both, RUN_ROOT on a shared file system.
#
# Environment variables only choose files, paths and the launch size; every hyperparameter lives in the YAML.
#   DENOISER   continuous (default) | discrete: which toy config CONFIG defaults to
#   CONFIG     run config (default configs/genhancer/toy.yaml)     RUN_ROOT  outputs (default runs/toy or
#   DATA       data.path override (image folder or shards)                   runs/<config name>)
#   VAE        latent.vae_path override (AutoencoderKL dir/hub id)  WORLD     toy world dir (runs/toyworld)
#   TOY_CLIP   the toy CLIP a DENOISER=discrete run uses (default runs/toy/clip, the continuous run's)
#   MMVP       MMVP-VLM folder for the before/after table (toy: $WORLD/mmvp_vlm)
#   MMVP_DECISION  a larger MMVP-VLM-style folder to decide on (toy: $WORLD/mmvp_vlm_decision, 150 pairs/pattern)
#   MMVP_WORDS the decision set's pairs with statements in the toy captions' words: a text-side diagnostic
#              (toy: $WORLD/mmvp_vlm_decision_words, when the world has it)
#   MMVP_VAL   MMVP-style pairs for the stage-1 conditioning gap (toy: $WORLD/mmvp_vlm_val; never reported on)
#   PROBES     a folder with train/ and val/ image folders + scenes.jsonl labels for linear probes (toy: $WORLD)
#   ZEROSHOT   zero-shot spec JSON (toy: $WORLD/val/zeroshot_shape.json)
#   SAMPLES    images for the reconstruction grid (toy: $WORLD/val/images)
#   IMAGINE=1  toy: also judge the denoiser's drawings with the attribute classifier (trained once, ~5 min)
#   SWEEP=1    also choose the stage-2 length on MMVP_VAL and report it on MMVP_DECISION (scripts/stage2_sweep.sh;
#              the stage-2 steps kept are schedule.stage2.eval_at; toy ~2-4 min)
#   NUM_GPUS   processes per node (0 = one plain process, the CPU default)
#   NUM_NODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   multi-node launch
# Rerunning is cheap: finished stages resume from their last checkpoint (train.resume=auto) and stop.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # environment, repository root, launch variables, step

case "${DENOISER:-continuous}" in
  continuous) TOY_CONFIG=configs/genhancer/toy.yaml ;;
  discrete) TOY_CONFIG=configs/genhancer/toy-discrete.yaml ;;
  *) echo "DENOISER must be continuous or discrete, got '${DENOISER}'" >&2; exit 2 ;;
esac
CONFIG="${CONFIG:-$TOY_CONFIG}"
NAME="$(basename "$CONFIG" .yaml)"
if [ "$NAME" = toy ] || [ "$NAME" = toy-discrete ]; then TOY=1; else TOY=0; fi
RUN_ROOT="${RUN_ROOT:-runs/$NAME}"
WORLD="${WORLD:-runs/toyworld}"

# ---------------------------------------------------------------------------------------- inputs
COMMON=()
if [ "$TOY" = 1 ]; then
  if [ ! -f "$WORLD/world.json" ]; then
    step "building the toy world -> $WORLD"
    python -m toyworld build --out "$WORLD"
  fi
  CLIP="$RUN_ROOT/clip"
  if [ "$NAME" = toy-discrete ]; then CLIP="${TOY_CLIP:-runs/toy/clip}"; fi  # the continuous toy run's CLIP
  if [ ! -f "$CLIP/config.json" ]; then
    step "pretraining the toy CLIP -> $CLIP"
    python -m toyworld pretrain-clip --world "$WORLD" --out "$CLIP"
  fi
  if [ "$NAME" = toy ]; then
    VAE_DIR="$(dirname "$CLIP")/vae"  # the config's latent.vae_path (runs/toy/vae)
    if [ ! -f "$VAE_DIR/config.json" ]; then
      step "pretraining the toy VAE -> $VAE_DIR (trained once; the toy FLUX.1 VAE)"
      python -m toyworld pretrain-vae --world "$WORLD" --out "$VAE_DIR"
    fi
    COMMON+=("latent.vae_path=$VAE_DIR")
  fi
  if [ "$NAME" = toy-discrete ]; then
    step "toy VQ tokenizer (the config's latent.vae_path; trained once)"
    python -m toyworld train-vq --run-config "$CONFIG" --images "${DATA:-$WORLD/train}" --skip-existing
  fi
  COMMON+=("encoder.path=$CLIP" "data.path=${DATA:-$WORLD/train}")
  MMVP="${MMVP:-$WORLD/mmvp_vlm}"
  MMVP_DECISION="${MMVP_DECISION:-$WORLD/mmvp_vlm_decision}"
  MMVP_VAL="${MMVP_VAL:-$WORLD/mmvp_vlm_val}"
  if [ -d "$WORLD/mmvp_vlm_decision_words" ]; then MMVP_WORDS="${MMVP_WORDS:-$WORLD/mmvp_vlm_decision_words}"; fi
  PROBES="${PROBES:-$WORLD}"
  ZEROSHOT="${ZEROSHOT:-$WORLD/val/zeroshot_shape.json}"
  SAMPLES="${SAMPLES:-$WORLD/val/images}"
else
  [ -n "${DATA:-}" ] && COMMON+=("data.path=$DATA")
  [ -n "${VAE:-}" ] && COMMON+=("latent.vae_path=$VAE")
  CLIP="$(python -c "from genhancer.config import load_genhancer_config as l; print(l('$CONFIG').encoder.path)")"
fi

# ---------------------------------------------------------------------------------------- launcher
if [ "$NUM_GPUS" -gt 0 ]; then
  ACC_CONFIG=configs/accelerate/single_node.yaml
  [ "$NUM_NODES" -gt 1 ] && ACC_CONFIG=configs/accelerate/two_nodes.yaml
  LAUNCH=(accelerate launch --config_file "$ACC_CONFIG" --num_processes $(( NUM_GPUS * NUM_NODES ))
          --num_machines "$NUM_NODES" --machine_rank "$NODE_RANK" --main_process_ip "$MASTER_ADDR"
          --main_process_port "$MASTER_PORT" -m genhancer.train)
else
  LAUNCH=(python -m genhancer.train)  # one plain process: the trainer fills in the launcher variables
fi
IS_MAIN=$([ "$NODE_RANK" = 0 ] && echo 1 || echo 0)

# ---------------------------------------------------------------------------------------- stages
step "stage 1 -> $RUN_ROOT/stage1"
"${LAUNCH[@]}" --config "$CONFIG" "${COMMON[@]}" stage=stage1 train.run_dir="$RUN_ROOT/stage1"
step "stage 2 -> $RUN_ROOT/stage2"
"${LAUNCH[@]}" --config "$CONFIG" "${COMMON[@]}" stage=stage2 init_from="$RUN_ROOT/stage1/final" \
  train.run_dir="$RUN_ROOT/stage2"
[ "$IS_MAIN" = 1 ] || exit 0  # evaluation and plots: once, on the first node

# Export and every evaluation below run in one Python process (later ... run_later: no start-up per command).
note "export -> $RUN_ROOT/encoder"
later genhancer.export --run "$RUN_ROOT/stage2" --out "$RUN_ROOT/encoder"

E="$RUN_ROOT/eval"
mkdir -p "$E"
before_after() {  # MMVP-VLM of the base and the enhanced encoder on one benchmark folder, then the comparison
  local tag="$1" bench="$2"
  later eval.mmvp_vlm --model "$CLIP" --benchmark "$bench" --out "$E/${tag}_before.json"
  later eval.mmvp_vlm --model "$RUN_ROOT/encoder" --benchmark "$bench" --out "$E/${tag}_after.json"
  later eval.mmvp_vlm --compare "$E/${tag}_before.json" "$E/${tag}_after.json" --labels before after \
    --out "$E/${tag}_change.json" --plot "$E/${tag}_before_after.png"
}
if [ -n "${MMVP_VAL:-}" ]; then
  note "conditioning gap of stage 1: does the denoiser use each attribute? ($MMVP_VAL)"
  later genhancer.diagnostics cond-gap --stage-dir "$RUN_ROOT/stage1" --benchmark "$MMVP_VAL" \
    --out "$E/cond_gap_stage1.json" --plot "$E/cond_gap_stage1.png"
fi
if [ -n "${MMVP:-}" ]; then
  note "MMVP-VLM before/after ($MMVP)"
  before_after mmvp "$MMVP"
else
  note "MMVP-VLM skipped (set MMVP=<MMVP-VLM folder>)"
fi
if [ -n "${MMVP_DECISION:-}" ]; then
  note "MMVP-VLM before/after on the decision set ($MMVP_DECISION)"
  before_after mmvp_decision "$MMVP_DECISION"
fi
if [ -n "${MMVP_WORDS:-}" ]; then
  note "MMVP-VLM before/after on the decision pairs in the captions' words ($MMVP_WORDS)"
  before_after mmvp_words "$MMVP_WORDS"
elif [ "$TOY" = 1 ]; then
  note "MMVP-VLM in the captions' words skipped: $WORLD has no mmvp_vlm_decision_words/ (a world built" \
    "before it existed; rebuild it with python -m toyworld build --out $WORLD)"
fi
if [ -n "${PROBES:-}" ]; then
  note "linear probes on the global token, before/after ($PROBES/{train,val})"
  later eval.probes --model "$CLIP" --train "$PROBES/train" --val "$PROBES/val" --out "$E/probes_before.json"
  later eval.probes --model "$RUN_ROOT/encoder" --train "$PROBES/train" --val "$PROBES/val" \
    --out "$E/probes_after.json"
  later eval.probes --compare "$E/probes_before.json" "$E/probes_after.json" --names before after \
    --coarse color shape background --out "$E/probes_change.json" --plot "$E/probes_change.png"
fi
if [ -n "${ZEROSHOT:-}" ]; then
  note "zero-shot no-regression check ($ZEROSHOT)"
  later eval.zeroshot --model "$CLIP" --spec "$ZEROSHOT" --out "$E/zeroshot_before.json"
  later eval.zeroshot --model "$RUN_ROOT/encoder" --spec "$ZEROSHOT" --out "$E/zeroshot_after.json"
fi
if [ -n "${SAMPLES:-}" ]; then
  note "reconstruction grid -> $RUN_ROOT/reconstructions.png"
  later genhancer.sample --stage-dir "$RUN_ROOT/stage1" --images "$SAMPLES" --out "$RUN_ROOT/reconstructions.png"
fi
if [ "$TOY" = 1 ] && [ "${IMAGINE:-0}" = 1 ]; then
  ATTR="$(dirname "$CLIP")/attributes"
  note "what the denoiser imagines, judged per attribute -> $RUN_ROOT/imagine (classifier $ATTR, trained once)"
  later toyworld train-attributes --world "$WORLD" --out "$ATTR"
  later toyworld imagine --stage-dir "$RUN_ROOT/stage1" --classifier "$ATTR" --world "$WORLD" \
    --out "$RUN_ROOT/imagine"
fi
later genhancer.plots --runs "$RUN_ROOT/stage1" "$RUN_ROOT/stage2" --out "$RUN_ROOT/loss_curves.png"
run_later
if [ "${SWEEP:-0}" = 1 ] && [ -n "${MMVP_VAL:-}" ] && [ -n "${MMVP_DECISION:-}" ]; then
  step "stage-2 length chosen on $MMVP_VAL, reported on $MMVP_DECISION -> $E/stage2_sweep"
  RUN="$RUN_ROOT/stage2" VAL="$MMVP_VAL" TEST="$MMVP_DECISION" OUT="$E/stage2_sweep" bash scripts/stage2_sweep.sh
fi
step "done: $RUN_ROOT (encoder/, eval/, reconstructions.png, loss_curves.png)"
