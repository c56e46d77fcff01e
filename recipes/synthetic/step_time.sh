#!/usr/bin/env bash
# Training time per update of each KD method, relative to frame KL: the same student, data and
# batches through the real asr-kd-distill, STEPS updates each (no validation, no progress bar),
# one after the other on THREADS CPU threads; prints a markdown table.
#
# Usage (after the demo's stages 0-3). Each argument is [LABEL:]SETTING[|OVERRIDES]: a
# conf/distill setting, optionally named LABEL in the table, with extra overrides separated by ';':
#   bash recipes/synthetic/step_time.sh                       # none frame_kl hidden inter_ctc delay_window
#   bash recipes/synthetic/step_time.sh frame_kl hidden "pseudo|data.dir=exp2/data;targets_dir=exp2/targets"
#   bash recipes/synthetic/step_time.sh frame_kl "kl_top4:frame_kl|distill.k=4"
#   STEPS=300 THREADS=2 bash recipes/synthetic/step_time.sh
# The time is the run's fit_seconds (the training loop, data loading included, start-up not) / STEPS.
set -euo pipefail
EXP=${EXP:-exp}
STEPS=${STEPS:-200}
THREADS=${THREADS:-1}
STUDENT_MODEL=${STUDENT_MODEL:-student_tiny}
STUDENT_LR=${STUDENT_LR:-8e-3}
TEMPERATURE=${TEMPERATURE:-2.0}
case "${1:-}" in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;; esac
[ $# -gt 0 ] || set -- none frame_kl hidden inter_ctc delay_window
for f in "$EXP/data/.done" "$EXP/teacher/checkpoints/last.ckpt" "$EXP/targets/index.json"; do
  [ -e "$f" ] || { echo "error: $f is missing: run the demo's stages 0-3 first (bash recipes/synthetic/run.sh --stop-stage 3)" >&2; exit 2; }
done
out=$EXP/step_time
mkdir -p "$out"
declare -A seconds
for spec in "$@"; do
  name=${spec%%|*}; extra=()
  [ "$name" = "$spec" ] || IFS=';' read -r -a extra <<< "${spec#*|}"
  setting=${name#*:}; name=${name%%:*}
  rm -rf "${out:?}/$name"
  echo "$(date '+%F %T') $name: $STEPS updates on $THREADS thread(s)" >&2
  OMP_NUM_THREADS=$THREADS asr-kd-distill model="$STUDENT_MODEL" distill="$setting" \
    data.dir="$EXP/data" teacher_ckpt="$EXP/teacher/checkpoints/last.ckpt" targets_dir="$EXP/targets" \
    out_dir="$out/$name" trainer.max_steps="$STEPS" +experiment=demo_synthetic optim.lr="$STUDENT_LR" \
    optim.warmup_steps=$((STEPS / 10)) trainer.limit_val_batches=0 trainer.enable_progress_bar=false \
    distill.temperature="$TEMPERATURE" ${extra[@]+"${extra[@]}"} > "$out/$name.log" 2>&1 \
    || { echo "error: $name failed, see $out/$name.log" >&2; tail -n 5 "$out/$name.log" >&2; exit 1; }
  seconds[$name]=$(grep -ao "'fit_seconds': [0-9.]*" "$out/$name.log" | tail -n 1 | cut -d' ' -f2)
done
ref=${seconds[frame_kl]:-}
echo "| method | s / update | x frame_kl |"
echo "|---|---|---|"
for spec in "$@"; do
  name=${spec%%|*}; name=${name%%:*}
  awk -v n="$name" -v s="${seconds[$name]}" -v r="$ref" -v k="$STEPS" 'BEGIN {
    printf "| %s | %.4f | %s |\n", n, s / k, (r == "" ? "-" : sprintf("%.2f", s / r)) }'
done
