"""``asr-kd-prepare``: a LibriSpeech-layout corpus -> cuts, fbank, tokenizer, CMVN (:mod:`asr_kd.data.prepare`).

Usage: see ``conf/prepare.yaml`` or ``asr-kd-prepare --help``.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

from asr_kd.cli._command import hydra_command, run_log
from asr_kd.data import prepare

__all__ = ["main"]


@hydra_command("prepare")
def main(cfg: DictConfig) -> None:
    result = prepare.run(cfg)  # prints its table
    run_log.info("report: %s", json.dumps(result))


if __name__ == "__main__":
    main()
