# Shared by the scripts (sourced, never run):  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# After sourcing: the working directory is the repository root ($ROOT), the environment is set up
# (scripts/setup_env.sh), and
#   launch variables  NUM_GPUS (processes per node; 0 = one plain process, the CPU default), NUM_NODES,
#                     NODE_RANK, MASTER_ADDR, MASTER_PORT (default $DEFAULT_MASTER_PORT when the script sets
#                     it before sourcing, else 29500) -- from the environment, with defaults
#   step MSG...       prints "[<script> <seconds since start>s] MSG"
#   timed LABEL CMD.. runs CMD; prints "[<script>] LABEL: <wall> s wall, <cpu> s CPU" (CPU: user + system
#                     time of the processes it ran, what it costs on a machine of its own) and, when TIMINGS
#                     names a file, appends "LABEL<TAB><wall><TAB><cpu>" to it; returns CMD's exit status
#   launch_module MOD ARGS...
#                     python -m MOD ARGS, as one plain process (NUM_GPUS=0) or under torchrun with NUM_GPUS
#                     processes on each of NUM_NODES nodes
#   later MOD ARGS... queues `python -m MOD ARGS` for run_later (each quoted as printf '%q ' does)
#   note MSG...       queues a progress line, printed like `step` when run_later reaches it
#   run_later         runs the queue in one Python process (python -m genhancer.utils.batch: no start-up per
#                     command; the first failure stops it with its exit status) and empties it
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/setup_env.sh
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"

SCRIPT_NAME="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"
NUM_GPUS="${NUM_GPUS:-0}"
NUM_NODES="${NUM_NODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-${DEFAULT_MASTER_PORT:-29500}}"
LIB_START="$EPOCHREALTIME"

_elapsed() {  # _elapsed START: seconds since START (an $EPOCHREALTIME value), one decimal
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

step() {
  echo "[$SCRIPT_NAME $(_elapsed "$LIB_START" | cut -d. -f1)s] $*"
}

_child_cpu() {  # _child_cpu VAR: VAR = user + system seconds of this shell's finished children
  # `times` must run in this shell (a pipe or $(...) would ask a subshell, which has no children).
  local f
  f="$(mktemp)"
  times > "$f"
  printf -v "$1" '%s' "$(awk 'NR == 2 { split($0, t, /[ ms]+/); print t[1] * 60 + t[2] + t[3] * 60 + t[4] }' "$f")"
  rm -f "$f"
}

timed() {
  local label="$1" t0="$EPOCHREALTIME" c0 c1 rc=0 secs cpu
  shift
  _child_cpu c0
  "$@" || rc=$?
  secs="$(_elapsed "$t0")"
  _child_cpu c1
  cpu="$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.1f", b - a }')"
  echo "[$SCRIPT_NAME] $label: $secs s wall, $cpu s CPU"
  if [ -n "${TIMINGS:-}" ]; then printf '%s\t%s\t%s\n' "$label" "$secs" "$cpu" >> "$TIMINGS"; fi
  return "$rc"
}

launch_module() {
  local module="$1"
  shift
  if [ "$NUM_GPUS" -gt 0 ]; then
    torchrun --nproc_per_node "$NUM_GPUS" --nnodes "$NUM_NODES" --node_rank "$NODE_RANK" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" -m "$module" "$@"
  else
    python -m "$module" "$@"
  fi
}

LATER=()
later() { LATER+=("$(printf '%q ' "$@")"); }
note() { LATER+=("# $*"); }
run_later() {
  local rc=0
  printf '%s\n' "${LATER[@]}" | python -m genhancer.utils.batch --name "$SCRIPT_NAME" --since "$LIB_START" || rc=$?
  LATER=()
  return "$rc"
}
