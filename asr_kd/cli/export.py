"""``asr-kd-export``: a checkpoint -> ONNX graphs, checked against torch (:mod:`asr_kd.export`).

Usage: see ``conf/export.yaml`` or ``asr-kd-export --help``.
"""

from __future__ import annotations

from asr_kd.cli._command import hydra_command
from asr_kd.export.onnx import run

__all__ = ["main"]


def _lines(summaries: dict, cfg) -> str:
    return "\n".join(
        f"{name:<10} {s['path']}  max|ORT - torch| {s['max_abs_diff']:.2e}  "
        f"nodes {s['nodes']}  {s['mb']:.2f} MB"
        for name, s in summaries.items()
    )


main = hydra_command("export", run, show=_lines)

if __name__ == "__main__":
    main()
