"""``asr-kd-evaluate``: WER/CER, RTF, latency and size of checkpoints, one report (:mod:`asr_kd.evaluate`).

Usage: see ``conf/evaluate.yaml`` or ``asr-kd-evaluate --help``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asr_kd.config import CONF_DIR
from asr_kd.evaluate import evaluate, summary

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    results = evaluate(cfg)
    print(summary(results, cfg.out_dir))


if __name__ == "__main__":
    main()
