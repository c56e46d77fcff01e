"""``asr-kd-distill``: a student trained from a teacher's soft posteriors (:func:`asr_kd.training.run.distill`).

Usage: see ``conf/distill.yaml`` or ``asr-kd-distill --help``.
"""

from __future__ import annotations

from asr_kd.cli._command import hydra_command, run_summary
from asr_kd.training.launch import is_global_zero
from asr_kd.training.run import distill

__all__ = ["main"]

main = hydra_command("distill", distill, show=run_summary, rank_zero=is_global_zero)

if __name__ == "__main__":
    main()
