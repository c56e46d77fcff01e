#!/usr/bin/env bash
# asr_kd on a LibriSpeech download you already have: the synthetic recipe's stages at scale.
#
#   1 prepare cuts, features, BPE-500     asr-kd-prepare        -> $EXP/data
#   2 train the teacher (teacher_large)   asr-kd-train          -> $EXP/teacher
#   3 dump its soft targets               asr-kd-dump-targets   -> $EXP/targets
#   4 distil the student (student_small)  asr-kd-distill        -> $EXP/student_kd
#   5 same student, CTC only (baseline)   asr-kd-distill distill=none -> $EXP/student_ctc
#   6 evaluate all three                  asr-kd-evaluate       -> $EXP/report
#
# Usage:
#   bash recipes/librispeech/run.sh /data/LibriSpeech
#   bash recipes/librispeech/run.sh /data/LibriSpeech --stage 4 --stop-stage 6
#   TRAINER=gpu TRAIN_SUBSETS="train-clean-100" bash recipes/librispeech/run.sh /data/LibriSpeech
#   AVG=10 bash recipes/librispeech/run.sh /data/LibriSpeech   # average each model's last 10 checkpoints
#   bash recipes/librispeech/run.sh /data/LibriSpeech train:trainer.devices=4 eval:device=cuda
#   TEACHER=hf:facebook/wav2vec2-conformer-rope-large-960h-ft bash recipes/librispeech/run.sh \
#       /data/LibriSpeech dump:device=cuda dump:bf16=true
#
# TEACHER=hf:<save_pretrained dir or hub id>[@revision] distils a public transformers CTC model
# instead: stage 1 takes the tokenizer from it (tokenizer=from_teacher), stage 2 (teacher
# training) is skipped, stages 3-6 use it as teacher_ckpt (README "Public (transformers) teachers").
#
# The directory is the one holding the subset folders (train-clean-100/, dev-clean/, ...), as
# unpacked from OpenSLR resource 12 (https://www.openslr.org/12). Overrides work as in
# recipes/synthetic/run.sh: `TAG:key=value` for one kind of stage (prepare, teacher, dump, kd,
# ctc, students, train, eval); a plain `key=value` goes to the training stages.
set -euo pipefail

# ---- knobs (environment variables override them) --------------------------------------------
EXP=${EXP:-exp/librispeech}
SEED=${SEED:-0}
TRAIN_SUBSETS=${TRAIN_SUBSETS:-"train-clean-100 train-clean-360 train-other-500"}  # 960 h
DEV_SUBSETS=${DEV_SUBSETS:-"dev-clean dev-other"}
TEST_SUBSETS=${TEST_SUBSETS:-"test-clean test-other"}
BPE_SIZE=${BPE_SIZE:-500}
PREPARE_JOBS=${PREPARE_JOBS:-$(nproc)}   # stage 1's worker processes (header probes, fbank)
# Stage 1's speed-perturbed copies of the training cuts (icefall's 0.9/1.1), each with its own
# features and soft targets: 3x the training cuts, fbank and dump time. Empty = off.
SPEED_PERTURB=${SPEED_PERTURB-"0.9,1.1"}
TEACHER_MODEL=${TEACHER_MODEL:-teacher_large}
STUDENT_MODEL=${STUDENT_MODEL:-student_small}
TRAINER=${TRAINER:-multi_gpu}            # conf/trainer/<name>: gpu (one GPU) or multi_gpu
TEACHER_STEPS=${TEACHER_STEPS:-150000}
STUDENT_STEPS=${STUDENT_STEPS:-100000}   # each student; KD and CTC-only get the same
# Noam warmup of every training stage. conf/train.yaml's 500 suits the short CPU runs; LibriSpeech
# Conformer recipes warm up far longer (ESPnet's conformer: 25000-40000 steps). Not measured here.
WARMUP_STEPS=${WARMUP_STEPS:-25000}
DISTILL=${DISTILL:-frame_kl}
TOPK=${TOPK:-8}
TEMPERATURE=${TEMPERATURE:-2.0}
CHUNK_MS=${CHUNK_MS:-"160,320,640,1280"}
# Checkpoint averaging (icefall's --avg), the same for the teacher and both students: AVG=N
# writes checkpoints/averaged.ckpt, the mean weights of the last N snapshots AVG_EVERY updates
# apart (the last at the final update). 0 = off. icefall averages the last few epochs' weights;
# 5000 updates is a guess, not measured here.
AVG=${AVG:-0}
AVG_EVERY=${AVG_EVERY:-5000}
# The checkpoint dumped and evaluated; unset: averaged.ckpt with AVG > 0, else last.ckpt.
CKPT=${CKPT:-}
TEACHER=${TEACHER:-}                     # hf:<dir|hub id>[@rev]: a public teacher, no stage 2
stage=1
stop_stage=6

usage_missing() {
  cat >&2 <<EOF
error: $1

This recipe runs on a LibriSpeech copy you already have (it does not download it).
LibriSpeech is OpenSLR resource 12: https://www.openslr.org/12
Download and unpack the subsets you want (train-clean-100.tar.gz, train-clean-360.tar.gz,
train-other-500.tar.gz, dev-clean.tar.gz, dev-other.tar.gz, test-clean.tar.gz,
test-other.tar.gz), which gives:

  /data/LibriSpeech/
    train-clean-100/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    train-clean-100/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    train-clean-360/  train-other-500/  dev-clean/  dev-other/  test-clean/  test-other/

then run:  bash recipes/librispeech/run.sh /data/LibriSpeech
(a subset of the training data works too: TRAIN_SUBSETS="train-clean-100")
EOF
  exit 2
}

# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

case "${1:-}" in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;; esac
parse_args "$@"
check_stages 1 6
check_overrides prepare teacher dump kd ctc eval
set_averaging  # avg_args and CKPT from AVG, AVG_EVERY (common.sh)
[ ${#positional[@]} -le 1 ] || die "one LibriSpeech directory expected, got: ${positional[*]}"
corpus=${positional[0]:-}

[ -n "$corpus" ] || usage_missing "no LibriSpeech directory given"
[ -d "$corpus" ] || usage_missing "LibriSpeech directory not found: $corpus"
for subset in $TRAIN_SUBSETS $DEV_SUBSETS $TEST_SUBSETS; do
  [ -d "$corpus/$subset" ] || usage_missing "subset $subset missing: expected $corpus/$subset/"
  compgen -G "$corpus/$subset/*/*/*.trans.txt" > /dev/null \
    || usage_missing "$corpus/$subset holds no <speaker>/<chapter>/*.trans.txt"
done

csv() { echo "$*" | tr -s ' ' ','; }
data=$EXP/data
ckpt_of() { echo "$EXP/$1/checkpoints/$CKPT"; }
TEACHER_SOURCE=${TEACHER:-$(ckpt_of teacher)}  # the teacher of stages 3-6 (common.sh reads it)
if [ -n "$TEACHER" ]; then
  case $TEACHER in hf:?*) ;; *) die "TEACHER=$TEACHER: expected hf:<save_pretrained dir or hub id>[@revision]" ;; esac
  tokenizer_args=(tokenizer=from_teacher tokenizer.teacher="$TEACHER")
  tokenizer_name="the tokenizer of $TEACHER"
else
  tokenizer_args=(tokenizer=bpe tokenizer.vocab_size="$BPE_SIZE")
  tokenizer_name="BPE-$BPE_SIZE"
fi
train_list=$(csv $TRAIN_SUBSETS)
dev_list=$(csv $DEV_SUBSETS)
test_list=$(csv $TEST_SUBSETS)
# Training stages read every training subset and validate on the first dev subset.
read -r -a dev_array <<< "$DEV_SUBSETS"
data_args=(data.dir="$data" data.train_subset="[$train_list]" data.dev_subset="${dev_array[0]}")

if in_range 1; then
  log "Stage 1: prepare $train_list, $dev_list, $test_list with $tokenizer_name into $data ($(override_value prepare num_jobs "$PREPARE_JOBS") jobs)"
  run_stage 1 prepare "$data/.done" asr-kd-prepare corpus_dir="$corpus" \
    subsets="[$train_list,$dev_list,$test_list]" train_subsets="[$train_list]" \
    out_dir="$data" num_jobs="$PREPARE_JOBS" speed_perturb="[$SPEED_PERTURB]" "${tokenizer_args[@]}"
fi

if in_range 2 && [ -n "$TEACHER" ]; then
  log "Stage 2: TEACHER=$TEACHER given: no teacher to train"
elif in_range 2; then
  log "Stage 2: train the teacher ($TEACHER_MODEL, trainer=$TRAINER, $(override_value teacher trainer.max_steps "$TEACHER_STEPS") steps, warm-up $(override_value teacher optim.warmup_steps "$WARMUP_STEPS"))"
  train_stage 2 teacher "$EXP/teacher" asr-kd-train model="$TEACHER_MODEL" trainer="$TRAINER" \
    "${data_args[@]}" out_dir="$EXP/teacher" trainer.max_steps="$TEACHER_STEPS" seed="$SEED" \
    optim.warmup_steps="$WARMUP_STEPS" ${avg_args[@]+"${avg_args[@]}"}
fi

if in_range 3; then
  log "Stage 3: dump the teacher's top-$TOPK soft targets at T=$TEMPERATURE for $train_list"
  # One store for all training subsets: each run appends its shards (cuts keyed by id).
  reset_if_newer "$EXP/targets" "$TEACHER_SOURCE"  # a retrained teacher: dump again
  for subset in $TRAIN_SUBSETS; do
    run_stage 3 dump "$EXP/targets/.done-$subset" asr-kd-dump-targets \
      teacher_ckpt="$TEACHER_SOURCE" data.dir="$data" subsets="$subset" \
      out_dir="$EXP/targets" k="$TOPK" temperature="$TEMPERATURE"
  done
fi

STUDENT_ARGS=(trainer="$TRAINER" "${data_args[@]}" optim.warmup_steps="$WARMUP_STEPS"
  ${avg_args[@]+"${avg_args[@]}"})  # for distil_student (common.sh)

if in_range 4; then
  log "Stage 4: distil the student ($STUDENT_MODEL, distill=$DISTILL, $(override_value kd trainer.max_steps "$STUDENT_STEPS") steps, warm-up $(override_value kd optim.warmup_steps "$WARMUP_STEPS"))"
  distil_student student_kd "$DISTILL" kd 4
fi

if in_range 5; then
  log "Stage 5: train the same student with CTC only ($(override_value ctc trainer.max_steps "$STUDENT_STEPS") steps, warm-up $(override_value ctc optim.warmup_steps "$WARMUP_STEPS"), the baseline)"
  distil_student student_ctc none ctc 5
fi

if in_range 6; then
  log "Stage 6: evaluate teacher, student_kd and student_ctc on $test_list,$dev_list"
  stale_if_newer "$EXP/report/.done" "$TEACHER_SOURCE" "$(ckpt_of student_kd)" "$(ckpt_of student_ctc)"
  run_stage 6 eval "$EXP/report/.done" asr-kd-evaluate data.dir="$data" \
    subsets="[$test_list,$dev_list]" ckpt.teacher="$TEACHER_SOURCE" \
    ckpt.student_kd="$(ckpt_of student_kd)" ckpt.student_ctc="$(ckpt_of student_ctc)" \
    chunk_sizes_ms="[$CHUNK_MS]" out_dir="$EXP/report"
  cat "$EXP/report/results.md"
fi

log "Done (stages $stage-$stop_stage)."
