"""``asr-kd-prepare``: a LibriSpeech-layout corpus -> cuts, fbank, tokenizer, CMVN (:mod:`asr_kd.data.prepare`).

Usage: see ``conf/prepare.yaml`` or ``asr-kd-prepare --help``.
"""

from __future__ import annotations

from asr_kd.cli._command import hydra_command
from asr_kd.data import prepare

__all__ = ["main"]

main = hydra_command("prepare", prepare.run)  # prints its table

if __name__ == "__main__":
    main()
