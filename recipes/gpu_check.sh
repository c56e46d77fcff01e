#!/usr/bin/env bash
# The GPU check in one command (asr_kd/cli/gpu_check.py): on a small synthetic corpus, teacher_large
# a few hundred bf16 steps (trainer=gpu), the soft-target dump with 1 and 2 processes,
# student_small distilled online and from the store, asr-kd-evaluate device=cuda; prints step time,
# peak GPU memory, dump and evaluate throughput as one table and writes <out>/gpu_check.json.
#
# Usage:
#   bash recipes/gpu_check.sh                               # -> exp/gpu_check (must not exist)
#   bash recipes/gpu_check.sh --out exp/gpu_check_h100 --teacher-steps 500 --student-steps 300
#   bash recipes/gpu_check.sh --cpu-tiny --out /tmp/gpu_check   # tiny models on the CPU, ~2 min
set -euo pipefail
exec python -m asr_kd.cli.gpu_check "$@"
