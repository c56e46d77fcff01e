"""``asr-kd-train``: a Conformer CTC model trained with CTC, the teacher (:func:`asr_kd.training.run.train`).

The CTC-only student baseline is ``asr-kd-distill distill=none`` (the same settings as its KD
student, by construction).

Usage: see ``conf/train.yaml`` or ``asr-kd-train --help``.
"""

from __future__ import annotations

from asr_kd.cli._command import hydra_command, run_summary
from asr_kd.training.launch import is_global_zero
from asr_kd.training.run import train

__all__ = ["main"]

main = hydra_command("train", train, show=run_summary, rank_zero=is_global_zero)

if __name__ == "__main__":
    main()
