"""``asr-kd-dump-targets``: a teacher's top-k soft targets for prepared subsets (:mod:`asr_kd.distill.dump`).

Usage: see ``conf/dump_targets.yaml`` or ``asr-kd-dump-targets --help``.
"""

from __future__ import annotations

import json

from asr_kd.cli._command import hydra_command
from asr_kd.distill.dump import dump_targets

__all__ = ["main"]

main = hydra_command(
    "dump_targets", dump_targets, show=lambda result, _: json.dumps(result, indent=1)
)

if __name__ == "__main__":
    main()
