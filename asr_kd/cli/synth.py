"""``asr-kd-synth``: a synthetic corpus in the LibriSpeech layout (:mod:`asr_kd.data.synthetic`).

Usage: see ``conf/synth.yaml`` or ``asr-kd-synth --help``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asr_kd.config import CONF_DIR
from asr_kd.data import synthetic

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="synth")
def main(cfg: DictConfig) -> None:
    synthetic.run(cfg)


if __name__ == "__main__":
    main()
