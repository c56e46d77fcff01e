"""``asr-kd-train``: a Conformer CTC model trained with CTC, the teacher (:func:`asr_kd.training.run.train`).

The CTC-only student baseline is ``asr-kd-distill distill=none`` (the same settings as its KD
student, by construction).

Usage: see ``conf/train.yaml`` or ``asr-kd-train --help``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asr_kd.config import CONF_DIR
from asr_kd.training.run import train

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    result = train(cfg)
    print({k: v for k, v in result.items() if k != "metrics"})


if __name__ == "__main__":
    main()
