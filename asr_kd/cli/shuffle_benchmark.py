"""The training data's order at LibriSpeech 960 h scale: the first 1 % of an epoch, before and after.

Writes a simulated LibriSpeech-shaped training manifest (:mod:`asr_kd.data.simulated`: 281 241
cuts in three id-sorted subsets, durations like LibriSpeech's, no audio) and builds the training
sampler exactly as :class:`~asr_kd.data.datamodule.AsrDataModule` does, twice: *before*
(``global_shuffle=False``: the subsets read one after the other) and *after* (one pre-shuffled
manifest read lazily, the default for several subsets). For each it prints, for the first
``--fraction`` of epoch 0's batches, each subset's share and the distinct speakers; how many of
those cuts epoch 1's opening shares; and the Python memory the sampler's cuts take on one rank
(tracemalloc: what a freshly built sampler holds, and the peak until it has given out that
opening, by when its buffer is full). Every rank reads the same manifest and holds its own
buffer, so the figure is per rank at any world size.

Prints figures; not a test (tests/data/test_datamodule.py checks the same property, small).

Usage:
    python -m asr_kd.cli.shuffle_benchmark                      # 960 h shape, 600 s batches
    python -m asr_kd.cli.shuffle_benchmark --scale 0.1 --fraction 0.05
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import tracemalloc
from pathlib import Path

from asr_kd.data.datamodule import AsrDataModule
from asr_kd.data.simulated import LIBRISPEECH_960, opening, scaled, write_simulated

__all__ = ["main"]

_MB = 2**20


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="cuts and speakers x this")
    parser.add_argument("--max-duration", type=float, default=600.0, help="seconds per batch")
    parser.add_argument("--num-buckets", type=int, default=30, help="icefall's LibriSpeech value")
    parser.add_argument("--buffer-size", type=int, default=20000, help="lhotse's default")
    parser.add_argument("--fraction", type=float, default=0.01, help="of an epoch's batches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary dir")
    return parser.parse_args(argv)


def _epoch(sampler) -> dict:
    """Batches and duration statistics of one whole epoch (epoch 0) of ``sampler``."""
    sampler.set_epoch(0)
    batches = cuts = in_10_16 = 0
    total = longest = 0.0
    for batch in sampler:
        batches += 1
        for cut in batch:
            cuts += 1
            total += cut.duration
            longest = max(longest, cut.duration)
            in_10_16 += 10.0 <= cut.duration <= 16.0
    return {
        "batches": batches,
        "cuts": cuts,
        "hours": total / 3600,
        "mean": total / cuts,
        "in_10_16": in_10_16 / cuts,
        "max": longest,
    }


def _measure(dm: AsrDataModule, fraction: float, speakers: dict) -> dict:
    """The epoch statistics, the openings of epochs 0 and 1 of ``dm``'s sampler, and the memory
    of a fresh sampler built and drawn through epoch 0's opening (its buffer is full by then)."""
    start = time.perf_counter()
    stats = _epoch(dm.train_sampler())
    stats["epoch_s"] = time.perf_counter() - start
    num_batches = max(1, math.ceil(fraction * stats["batches"]))
    tracemalloc.start()
    sampler = dm.train_sampler()
    stats["held_mb"] = tracemalloc.get_traced_memory()[0] / _MB
    first = opening(sampler, 0, num_batches, speakers)
    stats["peak_mb"] = tracemalloc.get_traced_memory()[1] / _MB
    tracemalloc.stop()
    stats["first"] = [first, opening(sampler, 1, num_batches, speakers)]
    stats["num_batches"] = num_batches
    return stats


def _row(label: str, stats: dict, expected: dict[str, float]) -> tuple[str, bool]:
    first, second = stats["first"]
    shares = first.shares
    ids = {i for b in first.cut_ids for i in b}
    again = len(ids & {i for b in second.cut_ids for i in b}) / len(ids)
    mixed = all(abs(shares[s] / expected[s] - 1) <= 0.2 for s in expected)
    passed = mixed and first.num_speakers >= 500 and first.cut_ids != second.cut_ids
    cells = "".join(f"{100 * shares[s]:9.1f} %" for s in expected)
    text = (
        f"{label:28s}{cells}{first.num_speakers:10,d}{100 * again:12.1f} %"
        f"{stats['peak_mb']:10.0f}{stats['held_mb']:9.0f}   {'yes' if passed else 'no'}"
    )
    return text, passed


def _print_header(shape: dict, stats: dict, args: argparse.Namespace, write: dict) -> None:
    counts = " / ".join(f"{s} {n:,d} cuts {k:,d} spk" for s, (n, k) in shape.items())
    print(
        f"manifest: {stats['cuts']:,d} cuts, {stats['hours']:,.1f} h ({counts}); durations "
        f"mean {stats['mean']:.1f} s, {100 * stats['in_10_16']:.0f} % in 10-16 s, max "
        f"{stats['max']:.1f} s"
    )
    print(
        f"sampler: DynamicBucketingSampler as AsrDataModule builds it, max_duration "
        f"{args.max_duration:g} s, {args.num_buckets} buckets, buffer {args.buffer_size:,d} "
        f"cuts, world size 1; epoch = {stats['batches']:,d} batches; first "
        f"{100 * args.fraction:g} % = {stats['num_batches']} batches"
    )
    print(
        f"shuffled manifest written once in {write['s']:.1f} s, peak {write['peak_mb']:.0f} MB "
        "(python, tracemalloc)"
    )


def _write_shuffled(dm: AsrDataModule) -> dict:
    tracemalloc.start()
    start = time.perf_counter()
    dm.prepare_data()
    result = {"s": time.perf_counter() - start, "peak_mb": tracemalloc.get_traced_memory()[1] / _MB}
    tracemalloc.stop()
    return result


def run(root: Path, args: argparse.Namespace) -> bool:
    """Write the simulated manifest under ``root``, measure before and after, print; True when
    after meets the acceptance (each subset within +-20 % of its share, >= 500 speakers, the
    two epochs' openings differ)."""
    shape = scaled(LIBRISPEECH_960, args.scale)
    start = time.perf_counter()
    speakers = write_simulated(root, shape, seed=args.seed)
    print(f"simulated manifest written in {time.perf_counter() - start:.1f} s")
    total = sum(n for n, _ in shape.values())
    expected = {s: n / total for s, (n, _) in shape.items()}
    common = dict(
        train_subset=list(shape),
        max_duration=args.max_duration,
        seed=args.seed,
        num_buckets=args.num_buckets,
        buffer_size=args.buffer_size,
        num_workers=0,
    )
    before = AsrDataModule(root, global_shuffle=False, **common)
    after = AsrDataModule(root, global_shuffle=True, **common)
    write = _write_shuffled(after)
    results = {
        "before: subsets in order": _measure(before, args.fraction, speakers),
        "after: shuffled manifest": _measure(after, args.fraction, speakers),
    }
    _print_header(shape, results["after: shuffled manifest"], args, write)
    heads = "".join(f"{s.removeprefix('train-'):>11s}" for s in expected)
    print(
        f"\n{'first ' + format(args.fraction, '.0%') + ' of epoch 0':28s}{heads}  speakers"
        "  in epoch 1's   peak MB  held MB  meets"
    )
    print(f"{'expected share':28s}" + "".join(f"{100 * v:9.1f} %" for v in expected.values()))
    passed = False
    for label, stats in results.items():
        text, passed = _row(label, stats, expected)
        print(text)
    return passed


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.work_dir is not None:
        return 0 if run(args.work_dir, args) else 1
    with tempfile.TemporaryDirectory(prefix="shuffle_benchmark_") as tmp:
        return 0 if run(Path(tmp), args) else 1


if __name__ == "__main__":
    raise SystemExit(main())
