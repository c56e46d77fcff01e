"""``asr-kd-prepare``: a LibriSpeech-layout corpus -> cuts, fbank, tokenizer, CMVN (:mod:`asr_kd.data.prepare`).

Usage: see ``conf/prepare.yaml`` or ``asr-kd-prepare --help``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asr_kd.config import CONF_DIR
from asr_kd.data import prepare

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prepare")
def main(cfg: DictConfig) -> None:
    prepare.run(cfg)


if __name__ == "__main__":
    main()
