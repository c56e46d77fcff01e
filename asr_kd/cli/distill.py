"""``asr-kd-distill``: a student trained from a teacher's soft posteriors (:func:`asr_kd.training.run.distill`).

Usage: see ``conf/distill.yaml`` or ``asr-kd-distill --help``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asr_kd.config import CONF_DIR
from asr_kd.training.run import distill

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="distill")
def main(cfg: DictConfig) -> None:
    result = distill(cfg)
    print({k: v for k, v in result.items() if k != "metrics"})


if __name__ == "__main__":
    main()
