"""``asr-kd-evaluate``: WER/CER, RTF, latency and size of checkpoints, one report (:mod:`asr_kd.evaluation`).

Usage: see ``conf/evaluate.yaml`` or ``asr-kd-evaluate --help``.
"""

from __future__ import annotations

from asr_kd.cli._command import hydra_command
from asr_kd.evaluation.report import summary
from asr_kd.evaluation.run import evaluate

__all__ = ["main"]

main = hydra_command("evaluate", evaluate, show=lambda results, cfg: summary(results, cfg.out_dir))

if __name__ == "__main__":
    main()
