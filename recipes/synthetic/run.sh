#!/usr/bin/env bash
# The whole asr_kd job on a synthetic LibriSpeech-format corpus, in stages (icefall style):
#
#   0 synthesize the corpus        asr-kd-synth          -> $EXP/synth-corpus/LibriSpeech
#     (sentences of Jane Austen's novels, test/dev/train from disjoint books; beside it
#     text_stats.json and the LM text librispeech-lm-norm.txt.gz, training books only)
#   1 prepare cuts + tokenizer     asr-kd-prepare        -> $EXP/data
#   2 train the teacher (CTC)      asr-kd-train          -> $EXP/teacher
#   3 dump its soft targets        asr-kd-dump-targets   -> $EXP/targets
#   4 distil the student (KD)      asr-kd-distill        -> $EXP/student_kd
#   5 same student, CTC only       asr-kd-distill distill=none, same updates -> $EXP/student_ctc
#     (4 and 5 run side by side on a CPU with 2+ cores, logs in $EXP/student_{kd,ctc}.log)
#   6 word 3-gram LM, tuned        asr-kd-lm build|tune|hlg -> $EXP/lm (ARPA, lm_weight and
#                                  word_score tuned on dev for student_kd, HLG.fst for sherpa-onnx)
#   7 evaluate all three           asr-kd-evaluate       -> $EXP/demo (results.json/.md, plots):
#                                  greedy, beam, beam_lm rows and stream-*-sherpa-onnx-hlg
#   8 KD comparison (not default)  one student per distill setting -> $EXP/kd_compare/report
#
# Usage:
#   bash recipes/synthetic/run.sh                          # stages 0-7 (what `make demo` runs)
#   bash recipes/synthetic/run.sh --stage 2 --stop-stage 2 # one stage
#   bash recipes/synthetic/run.sh --stage 8 --stop-stage 8 # the KD comparison table
#   TEACHER_STEPS=4000 bash recipes/synthetic/run.sh       # the knobs below are env variables
#   bash recipes/synthetic/run.sh synth:text=words synth:vocab_size=200  # independent words (no
#                                                          # sentences, 0 % test OOV; docs/corpus.md)
#   AVG=5 bash recipes/synthetic/run.sh                    # average the last 5 checkpoints of each model
#   bash recipes/synthetic/run.sh teacher:model.d_model=192 students:optim.lr=2e-3 trainer.accelerator=cpu
#   LAUNCH="torchrun ... --no-python" bash recipes/synthetic/run.sh ...  # training under a launcher (common.sh)
#
# Extra arguments are Hydra overrides. `TAG:key=value` goes to one kind of stage, where TAG is
# synth, prepare, teacher, dump, kd, ctc, eval or compare; `students:key=value` goes to both
# students (4, 5, 8), keeping the KD-vs-CTC comparison fair; `train:key=value` and a plain
# `key=value` go to every training stage (2, 4, 5, 8). Stage 6 (asr-kd-lm, not Hydra) takes the
# LM_* knobs below.
#
# Each finished stage leaves a `.done` marker in its output directory; a rerun skips it. Delete
# the stage's output directory to redo it after changing its settings. A training stage stopped
# midway (a checkpoints/last.ckpt, no marker) is resumed (resume=true) on the next run.
set -euo pipefail

# ---- knobs (environment variables override them) --------------------------------------------
EXP=${EXP:-exp}                          # everything this recipe writes lives under here
SEED=${SEED:-0}
HOURS_TRAIN=${HOURS_TRAIN:-1.0}          # synthetic training audio; more helps both models
HOURS_DEV=${HOURS_DEV:-0.05}
HOURS_TEST=${HOURS_TEST:-0.1}            # test speakers never occur in train
TEACHER_MODEL=${TEACHER_MODEL:-teacher_small}
STUDENT_MODEL=${STUDENT_MODEL:-student_tiny}
TEACHER_STEPS=${TEACHER_STEPS:-1800}     # teacher updates (~0.36 s each on 2 cores)
STUDENT_STEPS=${STUDENT_STEPS:-2000}     # updates of each student (KD and CTC-only: the same)
# Learning-rate warm-up updates of every training stage (cosine decay after it): the demo
# experiment's 200. Left unset, a stage of no more than 200 updates (a smoke run:
# TEACHER_STEPS=5 STUDENT_STEPS=5) warms up over a tenth of them instead, as cosine decay needs
# more updates than warm-up; set, it is used as is.
warmup_given=${WARMUP_STEPS:+yes}
WARMUP_STEPS=${WARMUP_STEPS:-200}
# Peak learning rate of every student (KD, CTC-only, stage 8), over the experiment's 2e-3, which
# suits the teacher. Dev WER after 2000 updates, KD / CTC-only, measured on the demo corpus:
# 2e-3 43.8/47.8, 4e-3 34.2/39.6, 6e-3 31.7/37.4, 8e-3 28.8/35.4, 1.2e-2 33.7/57.8 (CTC unstable).
# 8e-3 is the best of that grid for both students, so neither is handicapped.
STUDENT_LR=${STUDENT_LR:-8e-3}
EXPERIMENT=${EXPERIMENT:-demo_synthetic} # conf/experiment/: batch size, lr schedule of every training
# conf/distill/<name> for the KD student. hidden (teacher layers 2,4,6 through learned projections,
# DistilHuBERT loss, no frame KL) measured best: test WER KD / CTC-only 0.60 full, 0.63 at 320 ms
# (3 seeds, docs/results.md); DISTILL=frame_kl gives the output-only KD of before.
DISTILL=${DISTILL:-hidden}
TOPK=${TOPK:-8}                          # soft targets kept per frame
TEMPERATURE=${TEMPERATURE:-2.0}          # softmax temperature of the stored soft targets
# Teacher layers stored beside the soft targets for distill=hidden (stage 8 reads them from the
# same store); [2,4,6] = teacher_small's layers paired with student_tiny's 3. Empty: none stored.
HIDDEN_LAYERS=${HIDDEN_LAYERS-[2,4,6]}
HIDDEN_COMPRESS=${HIDDEN_COMPRESS:-none}  # none (fp16) | int8 | pca<N> (see asr-kd-dump-targets --help)
# Stages 4 and 5 at once: the two students are independent, and on a CPU with 2+ cores two
# trainings of nproc/2 threads each end sooner than one after the other on all cores (2 cores,
# student_tiny, 80 updates: 14.5 s side by side vs 2 x 11.4 s in a row, measured 2026-12-01).
# auto: side by side when both stages run on a CPU with 2+ cores; yes | no force it.
STUDENTS_PARALLEL=${STUDENTS_PARALLEL:-auto}
CHUNK_MS=${CHUNK_MS:-320}                # streaming chunk(s) evaluated, e.g. "160,320,640"
# Checkpoint averaging (icefall's --avg), the same for the teacher and every student: AVG=N
# writes checkpoints/averaged.ckpt, the mean weights of the last N snapshots AVG_EVERY updates
# apart (the last at the final update). 0 = off.
AVG=${AVG:-0}
AVG_EVERY=${AVG_EVERY:-100}
# The checkpoint of every model that is dumped and evaluated; unset: averaged.ckpt with AVG > 0,
# else last.ckpt (the students are compared at equal updates either way).
CKPT=${CKPT:-}
COMPARE_DISTILL=${COMPARE_DISTILL:-}     # stage 8 settings; empty = every conf/distill/*.yaml
# Stage 6: the word n-gram of the training transcripts plus the corpus's LM text
# ($EXP/synth-corpus/librispeech-lm-norm.txt.gz, sentences of the training books only) when
# asr-kd-synth wrote one; never dev or test text. Its weight and word bonus are tuned on dev
# (beam_lm over the KD student's LM_TUNE_CHUNK_MS streaming log-probs) over this grid.
LM_ORDER=${LM_ORDER:-3}
LM_WEIGHTS=${LM_WEIGHTS:-0.5,1,2,3}
WORD_SCORES=${WORD_SCORES:--1,0,1,2}
LM_TUNE_CHUNK_MS=${LM_TUNE_CHUNK_MS:-320}
# Stage 7's searches (conf/evaluate.yaml's decoding) and runtimes: the stream-*-sherpa-onnx-hlg
# rows decode the KD and CTC students through sherpa-onnx with stage 6's HLG.fst.
DECODING=${DECODING:-greedy,beam,beam_lm}
EVAL_RUNTIME=${EVAL_RUNTIME:-onnx,sherpa-onnx-hlg}
stage=0
stop_stage=7                             # stage 8 (KD comparison) runs only when asked for
CONF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../conf" && pwd)
# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

case "${1:-}" in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;; esac
parse_args "$@"
check_stages 0 8
[ ${#positional[@]} -eq 0 ] || die "unexpected argument '${positional[0]}' (overrides are key=value)"
check_overrides synth prepare teacher dump kd ctc eval compare
set_averaging  # avg_args and CKPT from AVG, AVG_EVERY (common.sh)

corpus=$EXP/synth-corpus
data=$EXP/data
ckpt_of() { echo "$EXP/$1/checkpoints/$CKPT"; }
# warmup_for STEPS: optim.warmup_steps of a stage of STEPS updates (see WARMUP_STEPS).
warmup_for() {
  if [ -n "$warmup_given" ] || [ "$1" -gt "$WARMUP_STEPS" ]; then echo "$WARMUP_STEPS"
  else echo $(($1 >= 20 ? $1 / 10 : 1)); fi
}
# student_args KIND: STUDENT_ARGS (read by distil_student, common.sh) of a kd, ctc or compare
# stage, and its log words: the updates, warm-up and lr that stage's command really gets.
student_args() {
  local steps warmup
  steps=$(override_value "$1" trainer.max_steps "$STUDENT_STEPS")
  warmup=$(warmup_for "$steps")
  STUDENT_ARGS=(data.dir="$data" +experiment="$EXPERIMENT" optim.lr="$STUDENT_LR"
    optim.warmup_steps="$warmup" ${avg_args[@]+"${avg_args[@]}"})
  student_words="$steps steps, warm-up $(override_value "$1" optim.warmup_steps "$warmup"), lr $(override_value "$1" optim.lr "$STUDENT_LR")"
}

if in_range 0; then
  log "Stage 0: synthesize the corpus (${HOURS_TRAIN} h train) into $corpus"
  run_stage 0 synth "$corpus/.done" asr-kd-synth out_dir="$corpus" seed="$SEED" \
    hours.train="$HOURS_TRAIN" hours.dev="$HOURS_DEV" hours.test="$HOURS_TEST"
fi

if in_range 1; then
  log "Stage 1: prepare cuts, features and the tokenizer into $data"
  run_stage 1 prepare "$data/.done" asr-kd-prepare corpus_dir="$corpus/LibriSpeech" \
    "subsets=[train,dev,test]" out_dir="$data" tokenizer=char
fi

if in_range 2; then
  steps=$(override_value teacher trainer.max_steps "$TEACHER_STEPS")
  warmup=$(warmup_for "$steps")
  log "Stage 2: train the teacher ($TEACHER_MODEL, $steps steps, warm-up $(override_value teacher optim.warmup_steps "$warmup"))"
  train_stage 2 teacher "$EXP/teacher" asr-kd-train model="$TEACHER_MODEL" data.dir="$data" \
    out_dir="$EXP/teacher" trainer.max_steps="$TEACHER_STEPS" seed="$SEED" +experiment="$EXPERIMENT" \
    optim.warmup_steps="$warmup" ${avg_args[@]+"${avg_args[@]}"}
fi

if in_range 3; then
  log "Stage 3: dump the teacher's top-$TOPK soft targets at T=$TEMPERATURE"
  reset_if_newer "$EXP/targets" "$(ckpt_of teacher)"  # a retrained teacher: dump again
  run_stage 3 dump "$EXP/targets/.done" asr-kd-dump-targets teacher_ckpt="$(ckpt_of teacher)" \
    data.dir="$data" subsets=train out_dir="$EXP/targets" k="$TOPK" temperature="$TEMPERATURE" \
    ${HIDDEN_LAYERS:+"hidden_layers=$HIDDEN_LAYERS" hidden_compress="$HIDDEN_COMPRESS"}
fi

stage_4() {
  student_args kd
  log "Stage 4: distil the student ($STUDENT_MODEL, distill=$DISTILL, $student_words)"
  distil_student student_kd "$DISTILL" kd 4
}
stage_5() {
  student_args ctc
  log "Stage 5: train the same student with CTC only ($student_words, the baseline)"
  distil_student student_ctc none ctc 5
}
# Side by side only when both students are to be trained: a finished one (.done) is skipped below
# with its message on the console, and a lone student gets every core.
if in_range 4 && in_range 5 && students_side_by_side \
    && [ ! -f "$EXP/student_kd/.done" ] && [ ! -f "$EXP/student_ctc/.done" ]; then
  threads=$(( $(nproc) / 2 ))
  log "Stages 4 and 5: the two students side by side, $threads CPU thread(s) each (STUDENTS_PARALLEL=no: one after the other)"
  run_side_by_side "$threads" stage_4 "$EXP/student_kd.log" stage_5 "$EXP/student_ctc.log"
else
  if in_range 4; then stage_4; fi
  if in_range 5; then stage_5; fi
fi

lm=$EXP/lm/${LM_ORDER}gram.arpa
lm_text=$corpus/librispeech-lm-norm.txt.gz
if in_range 6; then
  extra_text=()
  if [ -f "$lm_text" ]; then extra_text=(--text "$lm_text"); fi
  log "Stage 6: the word $LM_ORDER-gram of the training transcripts${extra_text[*]:+ and $lm_text} into $EXP/lm; lm_weight x word_score tuned on dev (student_kd, $LM_TUNE_CHUNK_MS ms)"
  stale_if_newer "$EXP/lm/.done.build" "$data/.done"  # a prepared-again corpus: build again
  run_stage 6 lm "$EXP/lm/.done.build" asr-kd-lm build --data-dir "$data" --subsets train \
    ${extra_text[@]+"${extra_text[@]}"} --order "$LM_ORDER" --out "$lm"
  tune_lm 6 "$lm" dev
fi

if in_range 7; then
  lm_eval_args "$lm"  # lm_args: stage 6's LM, weights and graph (common.sh)
  log "Stage 7: evaluate teacher, student_kd and student_ctc into $EXP/demo (decoding $DECODING, runtimes $EVAL_RUNTIME${lm_args[*]+; ${lm_args[*]}})"
  stale_if_newer "$EXP/demo/.done" "$(ckpt_of teacher)" "$(ckpt_of student_kd)" "$(ckpt_of student_ctc)" \
    "$EXP/lm/.done.tune" "$EXP/lm/.done.hlg"
  run_stage 7 eval "$EXP/demo/.done" asr-kd-evaluate data.dir="$data" "subsets=[test]" \
    ckpt.teacher="$(ckpt_of teacher)" ckpt.student_kd="$(ckpt_of student_kd)" \
    ckpt.student_ctc="$(ckpt_of student_ctc)" chunk_sizes_ms="[$CHUNK_MS]" \
    "decoding=[$DECODING]" "runtime=[$EVAL_RUNTIME]" ${lm_args[@]+"${lm_args[@]}"} \
    out_dir="$EXP/demo"
  cat "$EXP/demo/results.md"
fi

if in_range 8; then
  read -r -a settings <<< "$COMPARE_DISTILL"
  if [ ${#settings[@]} -eq 0 ]; then
    for f in "$CONF_DIR"/distill/*.yaml; do [ -f "$f" ] && settings+=("$(basename "$f" .yaml)"); done
  fi
  [ ${#settings[@]} -gt 0 ] || die "no distill settings: COMPARE_DISTILL is empty and $CONF_DIR/distill has no .yaml"
  student_args compare
  log "Stage 8: KD comparison, one $STUDENT_MODEL per distill setting ($student_words): ${settings[*]}"
  ckpts=() ckpt_files=()
  for setting in "${settings[@]}"; do
    distil_student "kd_compare/$setting" "$setting" compare 8
    ckpt_files+=("$(ckpt_of "kd_compare/$setting")")
    ckpts+=("+ckpt.$setting=${ckpt_files[-1]}")
  done
  stale_if_newer "$EXP/kd_compare/report/.done" "${ckpt_files[@]}"
  run_stage 8 eval "$EXP/kd_compare/report/.done" asr-kd-evaluate data.dir="$data" "subsets=[test]" \
    "${ckpts[@]}" chunk_sizes_ms="[$CHUNK_MS]" out_dir="$EXP/kd_compare/report"
  cat "$EXP/kd_compare/report/results.md"
fi

log "Done (stages $stage-$stop_stage)."
