"""``asr-kd-train``: a Conformer CTC model trained with CTC, the teacher (:func:`asr_kd.training.run.train`).

The CTC-only student baseline is ``asr-kd-distill distill=none`` (the same settings as its KD
student, by construction).

Usage: see ``conf/train.yaml`` or ``asr-kd-train --help``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from asr_kd.cli._command import hydra_command, report
from asr_kd.training.run import train

__all__ = ["main"]


@hydra_command("train")
def main(cfg: DictConfig) -> None:
    result = train(cfg)
    report(str({k: v for k, v in result.items() if k != "metrics"}))


if __name__ == "__main__":
    main()
