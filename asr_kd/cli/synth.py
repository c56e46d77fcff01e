"""``asr-kd-synth``: a synthetic corpus in the LibriSpeech layout (:mod:`asr_kd.data.synthetic`).

Usage: see ``conf/synth.yaml`` or ``asr-kd-synth --help``.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

from asr_kd.cli._command import hydra_command, run_log
from asr_kd.data import synthetic

__all__ = ["main"]


@hydra_command("synth")
def main(cfg: DictConfig) -> None:
    summary = synthetic.run(cfg)  # prints its table
    run_log.info("summary: %s", json.dumps(summary))


if __name__ == "__main__":
    main()
