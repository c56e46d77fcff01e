"""Deployment benchmark at real sizes: ``teacher_large`` offline vs ``student_small`` streaming at
160/320/640 ms, ONNX Runtime and sherpa-onnx, fp32 and int8, one thread, batch 1.

Prints one row per graph and runtime (RTF, ms per chunk, MB, MACs; :mod:`asr_kd.export.
deploy_benchmark` says how each is measured) and the ratios issue 22 judges. The weights are
random (untrained): the cost of a graph does not depend on them. Timings depend on the machine
and its load: state the CPU beside them.

Usage:
    python -m asr_kd.cli.deploy_benchmark                      # teacher_large vs student_small
    python -m asr_kd.cli.deploy_benchmark --seconds 60 --repeats 5 --json deploy.json
    python -m asr_kd.cli.deploy_benchmark --quick              # teacher_small vs student_tiny
    python -m asr_kd.cli.deploy_benchmark --profile            # + per-op profiles of the step
                                                               # and its weight products alone
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import onnxruntime
import torch

from asr_kd.errors import UserError
from asr_kd.export.deploy_benchmark import (
    DeploySettings,
    cpu_description,
    format_ratios,
    format_table,
    profile_eager_step,
    profile_step_graph,
    profile_weight_products,
    run_deploy_benchmark,
)

__all__ = ["main"]

# --quick: the demo's sizes and a short utterance, for a test and a first look.
_QUICK = DeploySettings("teacher_small", "student_tiny", (320,), 320, 3.0, 1)


def _settings(args: argparse.Namespace) -> DeploySettings:
    if args.quick:
        return _QUICK
    return DeploySettings(
        args.teacher, args.student, tuple(args.chunks_ms), args.ratio_chunk_ms, args.seconds,
        args.repeats,
    )  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = DeploySettings()
    parser.add_argument("--teacher", default=default.teacher, help="conf/model/<name>.yaml")
    parser.add_argument("--student", default=default.student, help="conf/model/<name>.yaml")
    parser.add_argument("--chunks-ms", type=int, nargs="+", default=list(default.chunks_ms))
    parser.add_argument("--ratio-chunk-ms", type=int, default=default.ratio_chunk_ms)
    parser.add_argument("--seconds", type=float, default=default.seconds, help="audio length")
    parser.add_argument("--repeats", type=int, default=default.repeats, help="timed passes")
    parser.add_argument("--quick", action="store_true", help="teacher_small/student_tiny, 3 s")
    parser.add_argument("--out-dir", default=None, help="keep the exports here (default: temp)")
    parser.add_argument("--json", default=None, help="also write the rows and ratios here")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="per-op time of the ratio step and the time of its weight products alone",
    )
    return parser


def _report(settings: DeploySettings, out_dir: str, args: argparse.Namespace) -> None:
    result = run_deploy_benchmark(settings, out_dir)
    print(
        f"{settings.teacher} vs {settings.student}, random weights (untrained), "
        f"{result.audio_s:.0f} s synthetic audio, 1 thread, batch 1, median of "
        f"{settings.repeats} passes; CPU: {cpu_description()}; "
        f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}"
    )
    print(format_table(result.rows))
    ratios = format_ratios(result)
    print("\n".join(ratios))
    if args.json:
        rows = [row.to_dict() for row in result.rows]
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "rows": rows, "ratios": ratios}, f, indent=2)
    if args.profile:
        print(profile_step_graph(settings, out_dir))
        print(profile_eager_step(settings))
        step = result.find(settings.student, f"stream-{settings.ratio_chunk_ms}ms")
        step_ms = None if step is None else step.rtf * settings.ratio_chunk_ms
        print(profile_weight_products(settings, out_dir, step_ms))


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.out_dir is not None:
            _report(settings, args.out_dir, args)
        else:
            with tempfile.TemporaryDirectory(prefix="asr_kd_deploy_") as out_dir:
                _report(settings, out_dir, args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
