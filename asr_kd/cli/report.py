"""Re-render results.md and the plots from a results.json (:mod:`asr_kd.evaluation.report`).

Usage:
    python -m asr_kd.cli.report exp/demo/results.json               # writes beside the json
    python -m asr_kd.cli.report exp/demo/results.json --out-dir /tmp/report
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from asr_kd.evaluation.report import load_results, write_report

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asr_kd.cli.report",
        description="Re-render results.md and the plots from a results.json.",
    )
    parser.add_argument("results", type=Path, help="results.json written by asr-kd-evaluate")
    parser.add_argument("--out-dir", type=Path, help="where to write (default: beside the json)")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in write_report(results, args.out_dir or args.results.parent):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
