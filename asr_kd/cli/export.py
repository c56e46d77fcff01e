"""``asr-kd-export``: a checkpoint -> ONNX graphs, checked against torch (:mod:`asr_kd.export`).

Usage: see ``conf/export.yaml`` or ``asr-kd-export --help``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from asr_kd.cli._command import hydra_command, report
from asr_kd.export.onnx import run

__all__ = ["main"]


@hydra_command("export")
def main(cfg: DictConfig) -> None:
    for name, s in run(cfg).items():
        report(
            f"{name:<10} {s['path']}  max|ORT - torch| {s['max_abs_diff']:.2e}  "
            f"nodes {s['nodes']}  {s['mb']:.2f} MB"
        )


if __name__ == "__main__":
    main()
