"""``asr-kd-evaluate``: WER/CER, RTF, latency and size of checkpoints, one report (:mod:`asr_kd.evaluate`).

Usage: see ``conf/evaluate.yaml`` or ``asr-kd-evaluate --help``.
"""

from __future__ import annotations

from asr_kd.cli._command import hydra_command
from asr_kd.evaluate import evaluate, summary

__all__ = ["main"]

main = hydra_command("evaluate", evaluate, show=lambda results, cfg: summary(results, cfg.out_dir))

if __name__ == "__main__":
    main()
