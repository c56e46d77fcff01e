"""``asr-kd-distill``: a student trained from a teacher's soft posteriors (:func:`asr_kd.training.run.distill`).

Usage: see ``conf/distill.yaml`` or ``asr-kd-distill --help``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from asr_kd.cli._command import hydra_command, report
from asr_kd.training.run import distill

__all__ = ["main"]


@hydra_command("distill")
def main(cfg: DictConfig) -> None:
    result = distill(cfg)
    report(str({k: v for k, v in result.items() if k != "metrics"}))


if __name__ == "__main__":
    main()
