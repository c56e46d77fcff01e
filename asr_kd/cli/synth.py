"""``asr-kd-synth``: a synthetic corpus in the LibriSpeech layout (:mod:`asr_kd.data.synthetic`).

Usage: see ``conf/synth.yaml`` or ``asr-kd-synth --help``.
"""

from __future__ import annotations

from asr_kd.cli._command import hydra_command
from asr_kd.data import synthetic

__all__ = ["main"]

main = hydra_command("synth", synthetic.run)  # prints its table

if __name__ == "__main__":
    main()
