# Shared by recipes/*/run.sh (sourced, never run): logging, arguments, stage guards, overrides.
#
# Arguments: --stage N, --stop-stage M (also --stage=N), `key=value` Hydra overrides, and
# positional words (a recipe may take a corpus path). An override may carry a stage-kind
# prefix, `TAG:key=value`:
#   TAG = a stage kind the recipe names (synth, prepare, teacher, dump, kd, ctc, eval, compare)
#         -> that kind of stage only
#   students:key=value -> both students (kd, ctc, compare): keeps KD-vs-CTC comparisons fair
#   train:key=value, or no prefix -> every training stage (teacher, kd, ctc, compare)
# A ':' after the '=' belongs to the value (out_dir=/a:b has no prefix).
#
# Training under a launcher (several GPUs, several nodes): LAUNCH is the command prefix of every
# training command (asr-kd-train, asr-kd-distill) and of nothing else; empty (the default) runs
# them directly. The other stages, the .done markers and every resume or redo decision stay in
# this one recipe process:
#   LAUNCH="srun --ntasks-per-node=8 --kill-on-bad-exit=1"       (inside an sbatch allocation)
#   LAUNCH="torchrun --nnodes=2 --nproc-per-node=8 --node-rank=0 --master-addr=HOST --master-port=29500 --no-python"
# A torchrun LAUNCH with a --node-rank other than 0 makes the run a worker node's: it runs the
# same recipe command (the EXP directory shared with node 0), launches the same training
# commands with the same resume decisions, waits for node 0's .done markers of the other stages
# (LAUNCH_POLL_S seconds between looks) and never writes or removes anything itself.

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') $*"; }
die() { echo "error: $*" >&2; exit 2; }  # a usage error: one line, status 2 (as the commands)

stage=${stage:-0}
stop_stage=${stop_stage:-100}
overrides=()
positional=()
recipe_args=()
LAUNCH=${LAUNCH:-}
LAUNCH_POLL_S=${LAUNCH_POLL_S:-10}
_marker_inputs=()  # a worker node: files a marker must be newer than to count as node 0's latest
_afresh=            # a worker node: the next training stage starts afresh (node 0 removed its dir)

# parse_args "$@": fills stage, stop_stage, overrides and positional; checks them and LAUNCH.
parse_args() {
  recipe_args=("$@")
  while [ $# -gt 0 ]; do
    case "$1" in
      --stage|--stop-stage)
        [ $# -ge 2 ] && [[ "$2" != -* ]] || die "$1 needs a value: $1 N"
        if [ "$1" = --stage ]; then stage=$2; else stop_stage=$2; fi
        shift 2 ;;
      --stage=*) stage=${1#*=}; shift ;;
      --stop-stage=*) stop_stage=${1#*=}; shift ;;
      --*) die "unknown option '$1' (expected --stage N, --stop-stage M, key=value overrides)" ;;
      *=*) overrides+=("$1"); shift ;;
      *) positional+=("$1"); shift ;;
    esac
  done
  [[ "$stage" =~ ^[0-9]+$ && "$stop_stage" =~ ^[0-9]+$ ]] \
    || die "--stage and --stop-stage take integers, got '$stage' and '$stop_stage'"
  _check_launch
}

# check_stages FIRST LAST: the recipe has stages FIRST..LAST; refuse a range that would run none
# of them (it used to print "Done" having done nothing).
check_stages() {
  [ "$stage" -le "$2" ] && [ "$stop_stage" -ge "$1" ] \
    || die "no stage in $stage-$stop_stage: this recipe has stages $1-$2"
  [ "$stage" -le "$stop_stage" ] \
    || die "--stage $stage is after --stop-stage $stop_stage: nothing to run (one stage: --stage $stage --stop-stage $stage)"
}

# The "TAG" of an override, or "train" when it has none.
override_tag() {
  local tag=${1%%:*}
  if [ "$tag" = "$1" ] || [[ "$tag" == *=* ]]; then echo train; else echo "$tag"; fi
}

# check_overrides KIND...: every override's prefix must be one of the recipe's stage kinds.
check_overrides() {
  local arg tag allowed="$* students train"
  for arg in ${overrides[@]+"${overrides[@]}"}; do
    tag=$(override_tag "$arg")
    [[ " $allowed " == *" $tag "* ]] \
      || die "unknown override prefix '$tag:' in '$arg' (expected one of$(printf ' %s:' $allowed))"
  done
}

# overrides_for KIND: print, one per line, the overrides meant for that kind (prefix stripped).
overrides_for() {
  local kind=$1 arg tag
  for arg in ${overrides[@]+"${overrides[@]}"}; do
    tag=$(override_tag "$arg")
    [[ "$arg" != "$tag:"* ]] || arg=${arg#*:}
    case "$tag" in
      students) case $kind in kd|ctc|compare) echo "$arg" ;; esac ;;
      train) case $kind in teacher|kd|ctc|compare) echo "$arg" ;; esac ;;
      *) if [ "$tag" = "$kind" ]; then echo "$arg"; fi ;;
    esac
  done
}

# override_value KIND KEY DEFAULT: the value of KEY in KIND's stages: the last KEY=... among the
# overrides meant for KIND (they come after the recipe's own arguments, so they win), else DEFAULT.
# For the stage log lines, which must show what the command really gets.
override_value() {
  local value=$3 arg
  while IFS= read -r arg; do
    if [[ "$arg" == "$2="* ]]; then value=${arg#*=}; fi
  done < <(overrides_for "$1")
  echo "$value"
}

in_range() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# _run_with_overrides KIND CMD...: log and run CMD plus KIND's overrides (last, so they win).
_run_with_overrides() {
  local kind=$1 extra=()
  shift
  mapfile -t extra < <(overrides_for "$kind")
  log "+ $* ${extra[*]+"${extra[*]}"}"
  "$@" ${extra[@]+"${extra[@]}"}
}

# run_stage N KIND MARKER CMD...: run CMD plus KIND's overrides, then create the MARKER file
# (a `.done` in the stage's output dir); skip the command when MARKER exists (delete the directory
# to redo). A worker node waits for node 0's MARKER instead.
run_stage() {
  local n=$1 kind=$2 marker=$3
  shift 3
  if is_worker; then
    _wait_for_marker "$n" "$marker"
    return 0
  fi
  if [ -f "$marker" ]; then
    log "Stage $n: $marker exists, skipping (delete $(dirname "$marker") to redo)"
    return 0
  fi
  _run_with_overrides "$kind" "$@"
  mkdir -p "$(dirname "$marker")" && touch "$marker"
}

# train_stage N KIND OUT_DIR CMD...: run_stage for a training command, under $LAUNCH. A run
# stopped before it wrote OUT_DIR/.done (OUT_DIR/checkpoints/last.ckpt, no marker) is resumed
# with resume=true, where asr-kd-train would refuse to start over it; delete OUT_DIR to train from
# scratch. A worker node makes the same decisions from the same files and launches the same
# command, without the marker.
train_stage() {
  local n=$1 kind=$2 dir=$3 resume=() launch=() afresh=$_afresh
  shift 3
  _afresh=
  read -r -a launch <<< "$LAUNCH"
  if [ -z "$afresh" ] && [ ! -f "$dir/.done" ] && [ -f "$dir/checkpoints/last.ckpt" ]; then
    log "Stage $n: resuming the unfinished run in $dir (delete the directory to start over)"
    resume=(resume=true)
  fi
  if ! is_worker; then
    if [ ! -f "$dir/.done" ]; then _worker_hint "$n"; fi
    run_stage "$n" "$kind" "$dir/.done" ${launch[@]+"${launch[@]}"} "$@" ${resume[@]+"${resume[@]}"}
  elif [ -z "$afresh" ] && [ -f "$dir/.done" ]; then
    log "Stage $n: $dir/.done exists (node 0 finished it), skipping"
  else
    _run_with_overrides "$kind" "${launch[@]}" "$@" ${resume[@]+"${resume[@]}"}
  fi
}

# _find_launch_option NAME: split LAUNCH into launch_words and set launch_at to the index of the
# word holding torchrun's --NAME value (--NAME=V or --NAME V, `-` or `_` in NAME); -1: absent.
_find_launch_option() {
  local i opt
  read -r -a launch_words <<< "$LAUNCH"
  launch_at=-1
  for ((i = 0; i < ${#launch_words[@]}; i++)); do
    opt=${launch_words[i]%%=*}
    if [ "${opt//_/-}" = "--$1" ]; then
      if [[ ${launch_words[i]} == *=* ]]; then launch_at=$i; else launch_at=$((i + 1)); fi
      return 0
    fi
  done
}

# launch_option NAME DEFAULT: the value of torchrun's --NAME in LAUNCH, else DEFAULT.
launch_option() {
  _find_launch_option "$1"
  local value=$2
  if [ "$launch_at" -ge 0 ]; then value=${launch_words[launch_at]:-}; value=${value#--*=}; fi
  echo "$value"
}

# _check_launch: refuse a torchrun LAUNCH without --no-python before any stage runs (torchrun
# would hand the training commands, console scripts, to python as files).
_check_launch() {
  _find_launch_option no-python
  [[ ${launch_words[0]:-} == torchrun || ${launch_words[0]:-} == */torchrun ]] || return 0
  [ "$launch_at" -ge 0 ] \
    || die "LAUNCH=\"$LAUNCH\": add --no-python (the training commands are console scripts, such as asr-kd-train, not Python files)"
}

# is_worker: this run is a worker node's (a torchrun LAUNCH with --node-rank other than 0).
is_worker() { [ "$(launch_option node-rank 0)" != 0 ]; }

# _worker_hint N: on node 0 of a torchrun LAUNCH of several nodes, log the command each other
# node runs to join stage N (its --node-rank for RANK); the whole recipe command works as well.
_worker_hint() {
  local args=""
  [ "$(launch_option nnodes 1)" != 1 ] || return 0
  _find_launch_option node-rank
  if [ "$launch_at" -lt 0 ]; then
    launch_words+=(--node-rank=RANK)
  elif [[ ${launch_words[launch_at]} == --* ]]; then
    launch_words[launch_at]=${launch_words[launch_at]%%=*}=RANK
  else
    launch_words[launch_at]=RANK
  fi
  if [ ${#recipe_args[@]} -gt 0 ]; then args=$(printf ' %q' "${recipe_args[@]}"); fi
  log "Stage $1: each other node joins it with: LAUNCH=\"${launch_words[*]}\" bash $0$args --stage $1 --stop-stage $1 (RANK: the node's rank)"
}

# _wait_for_marker N MARKER: a worker node waits until node 0 has written MARKER, newer than
# the stage's inputs (_marker_inputs: node 0 redoes a stage whose marker is older).
_wait_for_marker() {
  local waiting=
  until _marker_current "$2"; do
    if [ -z "$waiting" ]; then log "Stage $1: node 0 runs it; waiting for $2"; waiting=yes; fi
    sleep "$LAUNCH_POLL_S"
  done
  log "Stage $1: done by node 0 ($2)"
}

_marker_current() {
  local f
  [ -f "$1" ] || return 1
  for f in ${_marker_inputs[@]+"${_marker_inputs[@]}"}; do
    if [ "$f" -nt "$1" ]; then return 1; fi
  done
}

# stale_if_newer MARKER FILE...: delete MARKER when an input (a checkpoint) is newer than it. A
# worker node deletes nothing: it waits for a MARKER newer than the inputs.
stale_if_newer() {
  local marker=$1 f
  shift
  _marker_inputs=("$@")
  if is_worker; then return 0; fi
  for f in "$@"; do
    if [ -f "$marker" ] && [ "$f" -nt "$marker" ]; then rm -f "$marker"; fi
  done
}

# reset_if_newer DIR FILE: remove DIR when FILE is newer than any of its .done markers. Used for
# the soft targets: a retrained teacher's targets cannot be appended to the old store (the dump
# refuses another teacher's shards), so the whole store is dumped again. A worker node removes
# nothing: it waits for markers newer than FILE.
reset_if_newer() {
  local dir=$1 file=$2 marker
  _marker_inputs=("$file")
  if is_worker; then return 0; fi
  for marker in "$dir"/.done*; do
    if [ -f "$marker" ] && [ "$file" -nt "$marker" ]; then rm -rf "$dir"; return 0; fi
  done
}

# set_averaging: check AVG (checkpoints averaged per training stage, 0 = off) and AVG_EVERY, then
# set avg_args (the averaging options every training stage gets; none when AVG=0) and CKPT when
# unset (averaged.ckpt with AVG > 0, else last.ckpt), the checkpoint dumped and evaluated.
set_averaging() {
  case $AVG in ''|*[!0-9]*) die "AVG=$AVG: expected how many checkpoints to average (0 = off)" ;; esac
  case $AVG_EVERY in ''|*[!0-9]*|0) die "AVG_EVERY=$AVG_EVERY: expected a positive number of updates" ;; esac
  avg_args=()
  if [ "$AVG" -gt 0 ]; then
    avg_args=(average.last_n="$AVG" average.every_n_steps="$AVG_EVERY")
    CKPT=${CKPT:-averaged.ckpt}
  fi
  CKPT=${CKPT:-last.ckpt}
}

# distil_student NAME DISTILL KIND STAGE: one student ($STUDENT_MODEL, $STUDENT_STEPS updates)
# from the cached soft targets in $EXP/targets, plus the recipe's own STUDENT_ARGS (an array);
# the teacher is $TEACHER_SOURCE when the recipe sets it (hf:...), else $EXP/teacher's checkpoint.
# Soft targets newer than a KD student's last checkpoint (a retrained teacher) make it stale: its
# directory is removed and it is trained afresh. The CTC-only student does not read them.
distil_student() {
  local name=$1 setting=$2 kind=$3 n=$4 kd_args=() last=$EXP/$1/checkpoints/last.ckpt
  if [ "$setting" != none ]; then
    # The KD settings read the dumped targets: their temperature must be the dump's.
    kd_args=(distill.temperature="$TEMPERATURE")
    if [ -f "$last" ] && [ "$EXP/targets/index.json" -nt "$last" ]; then
      log "Stage $n: $EXP/targets is newer than $last: training $name again"
      if is_worker; then _afresh=yes; else rm -rf "${EXP:?}/$name"; fi
    fi
  fi
  train_stage "$n" "$kind" "$EXP/$name" asr-kd-distill model="$STUDENT_MODEL" \
    teacher_ckpt="${TEACHER_SOURCE:-$(ckpt_of teacher)}" distill="$setting" targets_dir="$EXP/targets" \
    out_dir="$EXP/$name" trainer.max_steps="$STUDENT_STEPS" seed="$SEED" \
    ${STUDENT_ARGS[@]+"${STUDENT_ARGS[@]}"} ${kd_args[@]+"${kd_args[@]}"}
}

# uses_hlg: EVAL_RUNTIME decodes with the HLG graph (runtime sherpa-onnx-hlg).
uses_hlg() { [[ ",$EVAL_RUNTIME," == *,sherpa-onnx-hlg,* ]]; }

# tune_lm N LM SUBSET [ARG...]: stage N's grid of LM's weight and word bonus (LM_WEIGHTS x
# WORD_SCORES) on SUBSET, decoded by student_kd at LM_TUNE_CHUNK_MS, the best into
# $EXP/lm/tuned.txt; then, when uses_hlg, the HLG of LM at those weights ($EXP/lm/HLG.fst). ARGs
# go to both commands (--lexicon FILE). A newer KD student or LM is tuned again; new weights make
# the graph again. Reads $data and ckpt_of from the recipe.
tune_lm() {
  local n=$1 lm=$2 subset=$3 tuned=()
  shift 3
  stale_if_newer "$EXP/lm/.done.tune" "$(ckpt_of student_kd)" "$lm"
  run_stage "$n" lm "$EXP/lm/.done.tune" asr-kd-lm tune --ckpt "$(ckpt_of student_kd)" \
    --data-dir "$data" --subset "$subset" --lm "$lm" "$@" --chunk-ms "$LM_TUNE_CHUNK_MS" \
    --lm-weights="$LM_WEIGHTS" --word-scores="$WORD_SCORES" --overrides-out "$EXP/lm/tuned.txt"
  uses_hlg || return 0
  mapfile -t tuned < "$EXP/lm/tuned.txt"
  stale_if_newer "$EXP/lm/.done.hlg" "$EXP/lm/tuned.txt"
  run_stage "$n" lm "$EXP/lm/.done.hlg" asr-kd-lm hlg --lm "$lm" --data-dir "$data" "$@" \
    --lm-weight "${tuned[0]#*=}" --word-score "${tuned[1]#*=}" --out "$EXP/lm/HLG.fst"
}

# lm_eval_args LM [OVERRIDE...]: lm_args, the evaluation's overrides from the LM stage: beam.lm=LM,
# the OVERRIDEs (beam.lexicon=FILE), the tuned weights and, when uses_hlg, hlg.graph; none when
# neither DECODING (beam_lm) nor EVAL_RUNTIME (sherpa-onnx-hlg) uses the LM.
lm_eval_args() {
  local lm=$1 tuned=() hlg_args=()
  shift
  lm_args=()
  [[ ",$DECODING," == *,beam_lm,* ]] || uses_hlg || return 0
  [ -f "$EXP/lm/.done.tune" ] \
    || die "$EXP/lm/.done.tune not found: run stage 6 (the LM) first, or leave beam_lm out of DECODING and sherpa-onnx-hlg out of EVAL_RUNTIME"
  mapfile -t tuned < "$EXP/lm/tuned.txt"
  if uses_hlg; then
    [ -f "$EXP/lm/.done.hlg" ] || die "$EXP/lm/.done.hlg not found: run stage 6 with EVAL_RUNTIME=$EVAL_RUNTIME"
    hlg_args=(hlg.graph="$EXP/lm/HLG.fst")
  fi
  lm_args=(beam.lm="$lm" "$@" "${tuned[@]}" ${hlg_args[@]+"${hlg_args[@]}"})
}

# students_side_by_side: whether stages 4 and 5 run at once (STUDENTS_PARALLEL: auto | yes | no).
# auto: yes on a CPU with two or more cores, unless a training stage is sent to a GPU (there the
# two would share one device, which the demo has not measured) or runs under a LAUNCH.
students_side_by_side() {
  case $STUDENTS_PARALLEL in
    yes) [ -z "$LAUNCH" ] || die "STUDENTS_PARALLEL=yes with LAUNCH set: the launcher's processes and port serve one training at a time (STUDENTS_PARALLEL=auto trains the students one after the other)"
      return 0 ;;
    no) return 1 ;;
    auto) [ -z "$LAUNCH" ] && [ "$(nproc)" -ge 2 ] && ! overrides_for kd | grep -q '^trainer.accelerator=\(gpu\|cuda\)' ;;
    *) die "STUDENTS_PARALLEL=$STUDENTS_PARALLEL: expected auto, yes or no" ;;
  esac
}

# run_side_by_side THREADS FN1 LOG1 FN2 LOG2: run the shell functions FN1 and FN2 at once, each
# with THREADS CPU threads (OMP_NUM_THREADS, read by torch) and its output in its LOG; then print
# each log's stage lines and final summary. Fails (after both ended) if either did, with the tail
# of its log.
run_side_by_side() {
  local threads=$(( $1 > 0 ? $1 : 1 )) fn1=$2 log1=$3 fn2=$4 log2=$5 pid1 pid2 rc1=0 rc2=0
  mkdir -p "$(dirname "$log1")" "$(dirname "$log2")"
  ( export OMP_NUM_THREADS=$threads; "$fn1" ) > "$log1" 2>&1 & pid1=$!
  ( export OMP_NUM_THREADS=$threads; "$fn2" ) > "$log2" 2>&1 & pid2=$!
  log "  $fn1 -> $log1 (pid $pid1); $fn2 -> $log2 (pid $pid2); follow with: tail -f $log1"
  wait "$pid1" || rc1=$?
  wait "$pid2" || rc2=$?
  _show_stage_log "$log1" "$rc1"
  _show_stage_log "$log2" "$rc2"
  [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ] || die "a student stage failed (status $rc1 / $rc2): see the logs above"
}

# _show_stage_log LOG STATUS: LOG's stage lines on stdout; its last lines on stderr if STATUS != 0.
_show_stage_log() {
  grep -a '^[0-9-]* [0-9:]* Stage' "$1" || true
  if [ "$2" -ne 0 ]; then echo "--- the last lines of $1:" >&2; tail -n 20 "$1" >&2; fi
}
