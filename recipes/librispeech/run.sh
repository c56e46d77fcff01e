#!/usr/bin/env bash
# asr_kd on a LibriSpeech download you already have: the synthetic recipe's stages at scale.
#
#   0 (SYNTH=yes) a LibriSpeech-shaped synthetic corpus   asr-kd-synth -> $EXP/synth-corpus
#   1 prepare cuts, features, BPE-500     asr-kd-prepare        -> $EXP/data
#   2 train the teacher (teacher_large)   asr-kd-train          -> $EXP/teacher
#   3 dump its soft targets (+ layers)    asr-kd-dump-targets   -> $EXP/targets
#   4 distil the student (student_small)  asr-kd-distill distill=hidden -> $EXP/student_kd
#   5 same student, CTC only (baseline)   asr-kd-distill distill=none -> $EXP/student_ctc
#   6 word LM: openslr 11's or built,     asr-kd-lm build|tune|hlg -> $EXP/lm (lm_weight and
#     tuned on dev-clean, HLG.fst          word_score tuned for student_kd, HLG for sherpa-onnx)
#   7 evaluate all three                  asr-kd-evaluate       -> $EXP/report (greedy, beam_lm,
#                                         stream-*-sherpa-onnx-hlg)
#
# Usage:
#   bash recipes/librispeech/run.sh /data/LibriSpeech
#   bash recipes/librispeech/run.sh /data/LibriSpeech --stage 4 --stop-stage 7
#   LM_DIR=/data/openslr-11 bash recipes/librispeech/run.sh /data/LibriSpeech --stage 6
#   TRAINER=gpu TRAIN_SUBSETS="train-clean-100" bash recipes/librispeech/run.sh /data/LibriSpeech
#   AVG=10 bash recipes/librispeech/run.sh /data/LibriSpeech   # average each model's last 10 checkpoints
#   DISTILL=frame_kl bash recipes/librispeech/run.sh /data/LibriSpeech  # output-only KD, no layers stored
#   SYNTH=yes bash recipes/librispeech/run.sh     # every stage on 3 h of synthetic LibriSpeech-shaped
#       speech (no LibriSpeech needed; synth:hours.train-other-500=5 and the like resize it)
#   bash recipes/librispeech/run.sh /data/LibriSpeech train:trainer.devices=4 eval:device=cuda
#   LAUNCH="srun --ntasks-per-node=8 --kill-on-bad-exit=1" bash recipes/librispeech/run.sh \
#       /data/LibriSpeech train:trainer.num_nodes=2 train:trainer.devices=8   # docs/commands.md "Several nodes"
#   TEACHER=hf:facebook/wav2vec2-conformer-rope-large-960h-ft bash recipes/librispeech/run.sh \
#       /data/LibriSpeech dump:device=cuda dump:bf16=true
#
# TEACHER=hf:<save_pretrained dir or hub id>[@revision] distils a public transformers CTC model
# instead: stage 1 takes the tokenizer from it (tokenizer=from_teacher), stage 2 (teacher
# training) is skipped, stages 3-7 use it as teacher_ckpt (README "Public (transformers) teachers").
#
# Stage 6's LM, the first of: LM_DIR/$LM_NAME (openslr 11's 3-gram.pruned.1e-7.arpa.gz as
# downloaded from https://www.openslr.org/11; LM_NAME=4-gram.arpa.gz for a stronger beam_lm, with
# EVAL_RUNTIME=onnx: its HLG would not fit in memory), else a LM_ORDER-gram built from
# LM_DIR/librispeech-lm-norm.txt.gz plus the training transcripts (pure Python: fine for a small
# text, not openslr's 800 M words), else from the training transcripts alone.
# LM_DIR/librispeech-lexicon.txt, when there, is the lexicon (its words, re-spelled by our
# tokenizer). LM_DIR: where openslr 11's files were unpacked (default: the directory holding the
# LibriSpeech one; with SYNTH=yes, the synthetic corpus, whose LM text asr-kd-synth may write).
#
# The directory is the one holding the subset folders (train-clean-100/, dev-clean/, ...), as
# unpacked from OpenSLR resource 12 (https://www.openslr.org/12). Overrides work as in
# recipes/synthetic/run.sh: `TAG:key=value` for one kind of stage (synth, prepare, teacher, dump,
# kd, ctc, students, train, eval); a plain `key=value` goes to the training stages.
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
# Where stage 7's batched decoding (every row's WER) runs: cuda when nvidia-smi sees a GPU, else
# cpu; its one-thread RTF sample stays on the CPU. (Stage 3's dump picks its device itself.)
EVAL_DEVICE=${EVAL_DEVICE:-$(nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)}
TEACHER_STEPS=${TEACHER_STEPS:-150000}
STUDENT_STEPS=${STUDENT_STEPS:-100000}   # each student; KD and CTC-only get the same
# Noam warmup of every training stage. conf/train.yaml's 500 suits the short CPU runs; LibriSpeech
# Conformer recipes warm up far longer (ESPnet's conformer: 25000-40000 steps). Not measured here.
WARMUP_STEPS=${WARMUP_STEPS:-25000}
# conf/distill/<name> of the KD student. hidden, the best measured method (0.60 of the CTC-only
# WER on the demo, docs/results.md): student layers HIDDEN_STUDENT_LAYERS learn teacher layers
# HIDDEN_TEACHER_LAYERS (1-based, pairwise), stored by stage 3 beside the soft targets.
DISTILL=${DISTILL:-hidden}
# student_small's 10 layers 4,7,10 <- teacher_large's 16 layers 6,11,16 (the same relative
# depth: 0.4, 0.7, 1.0); three pairs as DistilHuBERT and the demo (2,4,6 of 6). Other models or
# a TEACHER=hf:... teacher: pick layers they have (a layer out of range stops stage 3 at once).
HIDDEN_STUDENT_LAYERS=${HIDDEN_STUDENT_LAYERS:-4,7,10}
HIDDEN_TEACHER_LAYERS=${HIDDEN_TEACHER_LAYERS:-6,11,16}
# The stored teacher layers' codec: pca32 = 32 fp16 coefficients per layer and frame: 3 x 64 B
# + 32 B of top-8 posteriors = 224 B per frame, ~19 GB for 960 h (86 M frames at 40 ms; raw fp16
# 3 x 1 KB: 268 GB). On the demo pca20 of 192 dims cost under 1 WER point; 32 of 512 is a guess.
HIDDEN_COMPRESS=${HIDDEN_COMPRESS:-pca32}
TOPK=${TOPK:-8}
TEMPERATURE=${TEMPERATURE:-2.0}
CHUNK_MS=${CHUNK_MS:-"160,320,640,1280"}
# The students' dev WER (every dev subset) is taken streaming at this chunk (a multiple of the
# 40 ms frame); best.ckpt follows it. Empty: full context.
VAL_CHUNK_MS=${VAL_CHUNK_MS-320}
# Checkpoint averaging (icefall's --avg), the same for the teacher and both students: AVG=N
# writes checkpoints/averaged.ckpt, the mean weights of the last N snapshots AVG_EVERY updates
# apart (the last at the final update), which stages 3 and 6 then use. 0 = off. icefall
# averages the last few epochs' weights; 5 x 5000 updates is a guess, not measured here.
AVG=${AVG:-5}
AVG_EVERY=${AVG_EVERY:-5000}
# The checkpoint dumped and evaluated; unset: averaged.ckpt with AVG > 0, else last.ckpt.
CKPT=${CKPT:-}
TEACHER=${TEACHER:-}                     # hf:<dir|hub id>[@rev]: a public teacher, no stage 2
SYNTH=${SYNTH:-no}                       # yes: stage 0 writes the corpus (no directory argument)
LM_DIR=${LM_DIR:-}                       # openslr 11's files (see above); empty: the default
LM_NAME=${LM_NAME:-3-gram.pruned.1e-7.arpa.gz}
LM_ORDER=${LM_ORDER:-3}                  # of the LM built when LM_DIR has no $LM_NAME
LM_WEIGHTS=${LM_WEIGHTS:-0.5,1,2,3}     # stage 6's grid on dev-clean (icefall's --lm-scale sweep)
WORD_SCORES=${WORD_SCORES:--1,0,1,2}
LM_TUNE_CHUNK_MS=${LM_TUNE_CHUNK_MS:-320}
LM_TUNE_SUBSET=${LM_TUNE_SUBSET:-dev-clean}
DECODING=${DECODING:-greedy,beam_lm}     # stage 7's searches (conf/evaluate.yaml's decoding)
EVAL_RUNTIME=${EVAL_RUNTIME:-onnx,sherpa-onnx-hlg}
stage=0
stop_stage=7

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
Without LibriSpeech, SYNTH=yes bash recipes/librispeech/run.sh runs every stage on a small
synthetic corpus of the same shape (stage 0).
EOF
  exit 2
}

# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

case "${1:-}" in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;; esac
parse_args "$@"
check_stages 0 7
check_overrides synth prepare teacher dump kd ctc eval
set_averaging  # avg_args and CKPT from AVG, AVG_EVERY (common.sh)
[ ${#positional[@]} -le 1 ] || die "one LibriSpeech directory expected, got: ${positional[*]}"
case $SYNTH in
  yes) [ ${#positional[@]} -eq 0 ] \
         || die "SYNTH=yes writes its own corpus into $EXP/synth-corpus: give no directory (got ${positional[0]})"
       corpus=$EXP/synth-corpus/LibriSpeech ;;
  no) corpus=${positional[0]:-} ;;
  *) die "SYNTH=$SYNTH: expected yes (stage 0 synthesizes the corpus) or no" ;;
esac
case $VAL_CHUNK_MS in
  '') val_args=() ;;
  *[!0-9]*|0) die "VAL_CHUNK_MS=$VAL_CHUNK_MS: expected a chunk in ms (a multiple of 40), or empty for full context" ;;
  *) [ $((VAL_CHUNK_MS % 40)) -eq 0 ] || die "VAL_CHUNK_MS=$VAL_CHUNK_MS: expected a multiple of the 40 ms frame"
     val_args=(val_chunk_size=$((VAL_CHUNK_MS / 40))) ;;
esac

# check_corpus: the directory and each subset the stages read, else where LibriSpeech comes from.
check_corpus() {
  [ -n "$corpus" ] || usage_missing "no LibriSpeech directory given"
  [ -d "$corpus" ] || usage_missing "LibriSpeech directory not found: $corpus"
  for subset in $TRAIN_SUBSETS $DEV_SUBSETS $TEST_SUBSETS; do
    [ -d "$corpus/$subset" ] || usage_missing "subset $subset missing: expected $corpus/$subset/"
    compgen -G "$corpus/$subset/*/*/*.trans.txt" > /dev/null \
      || usage_missing "$corpus/$subset holds no <speaker>/<chapter>/*.trans.txt"
  done
}
LM_DIR=${LM_DIR:-$(dirname "${corpus:-.}")}
if [ "$SYNTH" = no ]; then
  check_corpus  # before any stage: a missing subset fails now, not after hours
elif in_range 0; then
  log "Stage 0: synthesize a LibriSpeech-shaped corpus (asr-kd-synth corpus=librispeech) into $corpus"
  run_stage 0 synth "$EXP/synth-corpus/.done" asr-kd-synth corpus=librispeech \
    out_dir="$EXP/synth-corpus" seed="$SEED"
fi
if [ "$SYNTH" = yes ] && in_range 1; then check_corpus; fi

csv() { echo "$*" | tr -s ' ' ','; }
data=$EXP/data
ckpt_of() { echo "$EXP/$1/checkpoints/$CKPT"; }
TEACHER_SOURCE=${TEACHER:-$(ckpt_of teacher)}  # the teacher of stages 3-7 (common.sh reads it)
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
# Training stages read every training subset and validate on each dev subset (best.ckpt: the
# combined dev WER).
data_args=(data.dir="$data" data.train_subset="[$train_list]" data.dev_subset="[$dev_list]")
# Hidden-state KD (DISTILL=hidden): the layer pairs the KD student gets, the teacher layers stage
# 3 stores (codec fitted on the first training subset's frames; one call for every subset).
kd_layer_args=() dump_layer_args=()
if [ "$DISTILL" = hidden ]; then
  kd_layer_args=(distill.student_layers="[$HIDDEN_STUDENT_LAYERS]" distill.teacher_layers="[$HIDDEN_TEACHER_LAYERS]")
  read -r -a train_array <<< "$TRAIN_SUBSETS"
  dump_layer_args=(hidden_layers="[$HIDDEN_TEACHER_LAYERS]" hidden_compress="$HIDDEN_COMPRESS"
    hidden_fit_subset="${train_array[0]}")
fi

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
  layers_words=""
  if [ ${#dump_layer_args[@]} -gt 0 ]; then layers_words=" and teacher layers $HIDDEN_TEACHER_LAYERS ($HIDDEN_COMPRESS)"; fi
  log "Stage 3: dump the teacher's top-$TOPK soft targets at T=$TEMPERATURE$layers_words for $train_list"
  # One store, one call for every training subset: a fitted codec is fitted once.
  reset_if_newer "$EXP/targets" "$TEACHER_SOURCE"  # a retrained teacher: dump again
  run_stage 3 dump "$EXP/targets/.done" asr-kd-dump-targets \
    teacher_ckpt="$TEACHER_SOURCE" data.dir="$data" subsets="[$train_list]" \
    out_dir="$EXP/targets" k="$TOPK" temperature="$TEMPERATURE" \
    ${dump_layer_args[@]+"${dump_layer_args[@]}"}
fi

# Both students' settings; both are validated streaming (VAL_CHUNK_MS). STUDENT_ARGS (read by
# distil_student, common.sh) is these, plus the layer pairs for the KD student.
student_args=(trainer="$TRAINER" "${data_args[@]}" optim.warmup_steps="$WARMUP_STEPS"
  ${avg_args[@]+"${avg_args[@]}"} ${val_args[@]+"${val_args[@]}"})

if in_range 4; then
  log "Stage 4: distil the student ($STUDENT_MODEL, distill=$DISTILL, $(override_value kd trainer.max_steps "$STUDENT_STEPS") steps, warm-up $(override_value kd optim.warmup_steps "$WARMUP_STEPS"))"
  STUDENT_ARGS=("${student_args[@]}" ${kd_layer_args[@]+"${kd_layer_args[@]}"})
  distil_student student_kd "$DISTILL" kd 4
fi

if in_range 5; then
  log "Stage 5: train the same student with CTC only ($(override_value ctc trainer.max_steps "$STUDENT_STEPS") steps, warm-up $(override_value ctc optim.warmup_steps "$WARMUP_STEPS"), the baseline)"
  STUDENT_ARGS=("${student_args[@]}")
  distil_student student_ctc none ctc 5
fi

# Stage 6's LM (see the header): openslr 11's file, else one built into $EXP/lm.
lexicon=$LM_DIR/librispeech-lexicon.txt
lm_text=$LM_DIR/librispeech-lm-norm.txt.gz
if [ -f "$LM_DIR/$LM_NAME" ]; then lm=$LM_DIR/$LM_NAME; else lm=$EXP/lm/${LM_ORDER}gram.arpa; fi
lexicon_args=() lexicon_override=()
if [ -f "$lexicon" ]; then lexicon_args=(--lexicon "$lexicon"); lexicon_override=(beam.lexicon="$lexicon"); fi

if in_range 6; then
  if [ "$lm" = "$LM_DIR/$LM_NAME" ]; then
    log "Stage 6: $lm (openslr 11) ${lexicon_args[*]+with $lexicon}; lm_weight x word_score tuned on $LM_TUNE_SUBSET (student_kd, $LM_TUNE_CHUNK_MS ms)"
  else
    extra_text=()
    if [ -f "$lm_text" ]; then extra_text=(--text "$lm_text"); fi
    log "Stage 6: no $LM_DIR/$LM_NAME: the word $LM_ORDER-gram of $train_list's transcripts${extra_text[*]:+ and $lm_text} into $lm; tuned on $LM_TUNE_SUBSET (student_kd, $LM_TUNE_CHUNK_MS ms)"
    stale_if_newer "$EXP/lm/.done.build" "$data/.done"
    read -r -a train_array <<< "$TRAIN_SUBSETS"
    run_stage 6 lm "$EXP/lm/.done.build" asr-kd-lm build --data-dir "$data" \
      --subsets "${train_array[@]}" ${extra_text[@]+"${extra_text[@]}"} --order "$LM_ORDER" --out "$lm"
  fi
  tune_lm 6 "$lm" "$LM_TUNE_SUBSET" ${lexicon_args[@]+"${lexicon_args[@]}"}
fi

if in_range 7; then
  lm_eval_args "$lm" ${lexicon_override[@]+"${lexicon_override[@]}"}  # lm_args: stage 6's LM, weights and graph (common.sh)
  log "Stage 7: evaluate teacher, student_kd and student_ctc on $test_list,$dev_list (decoding $DECODING, runtimes $EVAL_RUNTIME${lm_args[*]+; ${lm_args[*]}})"
  stale_if_newer "$EXP/report/.done" "$TEACHER_SOURCE" "$(ckpt_of student_kd)" "$(ckpt_of student_ctc)" \
    "$EXP/lm/.done.tune" "$EXP/lm/.done.hlg"
  run_stage 7 eval "$EXP/report/.done" asr-kd-evaluate data.dir="$data" \
    subsets="[$test_list,$dev_list]" ckpt.teacher="$TEACHER_SOURCE" \
    ckpt.student_kd="$(ckpt_of student_kd)" ckpt.student_ctc="$(ckpt_of student_ctc)" \
    chunk_sizes_ms="[$CHUNK_MS]" "decoding=[$DECODING]" "runtime=[$EVAL_RUNTIME]" \
    device="$EVAL_DEVICE" ${lm_args[@]+"${lm_args[@]}"} out_dir="$EXP/report"
  cat "$EXP/report/results.md"
fi

log "Done (stages $stage-$stop_stage)."
