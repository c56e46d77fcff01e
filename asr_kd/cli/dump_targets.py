"""``asr-kd-dump-targets``: a teacher's top-k soft targets for prepared subsets (:mod:`asr_kd.distill.dump`).

Usage: see ``conf/dump_targets.yaml`` or ``asr-kd-dump-targets --help``.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from asr_kd.config import CONF_DIR
from asr_kd.distill.dump import dump_targets

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="dump_targets")
def main(cfg: DictConfig) -> None:
    print(json.dumps(dump_targets(cfg), indent=1))


if __name__ == "__main__":
    main()
