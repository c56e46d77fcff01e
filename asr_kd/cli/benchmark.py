"""Streaming benchmark: per-chunk cost on long audio, RTF and its FLOP floor, config sizes.

Prints figures; it is not a test (timings depend on the machine). All timings are one CPU
thread, fp32, batch 1, after warm-up, model only (fbank features precomputed, as in
``asr-kd-evaluate``); the measurements are :mod:`asr_kd.models.benchmark`.

(a) bounded cost: time of one chunk from the state reached at 5 s vs at 60 s of audio
    (``forward_chunk`` leaves the state unchanged, so the same chunk is timed many times);
(b) RTF of streaming in ``chunk_size`` pieces, the FLOP floor (MACs per audio second over a
    measured one-thread GEMM rate) and RTF / floor;
(c) with ``--equivalence``: max |streaming - full forward| for chunks {1, 4, 8, 16} x left
    context {2, 4, unlimited}, random and fbank input, pieces of random sizes;
(d) with ``--sizes``: params and MACs per audio second of every ``conf/model`` config.

Usage:
    python -m asr_kd.cli.benchmark                         # student_tiny, 320 ms chunks
    python -m asr_kd.cli.benchmark --equivalence --sizes
    python -m asr_kd.cli.benchmark --model student_small --chunk-size 16
"""

from __future__ import annotations

import argparse

import torch

from asr_kd.models.benchmark import (
    CONF_MODEL,
    bounded_cost,
    equivalence,
    gemm_macs_per_second,
    model_from_config,
    streaming_rtf,
    synthetic_fbank,
)
from asr_kd.models.profile import count_params, macs_per_audio_second

__all__ = ["main"]


def _print_equivalence(model) -> None:
    inputs = {"random": torch.randn(1, 1203, 80), "fbank": synthetic_fbank(12.03)}
    model.set_cmvn(inputs["fbank"][0].mean(0), inputs["fbank"][0].std(0))
    print("(c) streaming vs full forward, max abs log-prob diff (12 s, random piece sizes):")
    for chunk_size in (1, 4, 8, 16):
        for left_chunks in (0, 2, 4, -1):
            diffs = {k: equivalence(model, chunk_size, left_chunks, x) for k, x in inputs.items()}
            print(
                f"    chunk {chunk_size:2d} left {left_chunks:2d}: random {diffs['random']:.2e}"
                f"  fbank {diffs['fbank']:.2e}"
            )


def _print_sizes() -> None:
    print("(d) config      params      MACs/audio-s (full, 10 s)   MACs/audio-s (stream 8, left 4)")
    for path in sorted(CONF_MODEL.glob("*.yaml")):
        model = model_from_config(path.stem)
        stream = macs_per_audio_second(model, 8, 4) if model.streaming else float("nan")
        print(
            f"{path.stem:15s} {count_params(model):>10,d}  {macs_per_audio_second(model):>14,.0f}"
            f"              {stream:>14,.0f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="student_tiny", help="conf/model/<name>.yaml")
    parser.add_argument("--chunk-size", type=int, default=8, help="encoder frames per chunk")
    parser.add_argument("--left-chunks", type=int, default=None, help="default: the model's")
    parser.add_argument("--equivalence", action="store_true", help="also print streaming diffs")
    parser.add_argument("--sizes", action="store_true", help="also print every config's size")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = model_from_config(args.model)
    left = model.resolve_left_chunks(args.left_chunks)
    chunk_ms = args.chunk_size * model.frame_shift_ms
    print(
        f"{args.model}: chunk {args.chunk_size} frames = {chunk_ms} ms, left_chunks {left}, "
        f"1 thread, fp32, batch 1, torch {torch.__version__}"
    )
    with torch.inference_mode():
        cost = bounded_cost(model, args.chunk_size, left)
        print(
            f"(a) per-chunk time: {cost['ms_at_5s']:.3f} ms at 5 s, {cost['ms_at_60s']:.3f} ms "
            f"at 60 s, ratio {cost['ratio']:.3f} (target <= 1.2)"
        )
        if left >= 0:
            unlimited = bounded_cost(model, args.chunk_size, -1, repeats=50)
            print(f"    for contrast, unlimited left context: ratio {unlimited['ratio']:.2f}")
        rtf = streaming_rtf(model, args.chunk_size, left)
    macs = macs_per_audio_second(model, args.chunk_size, left)
    d_model, ff_dim = model.d_model, model.layers[0].ff1.linear1.out_features
    rate = gemm_macs_per_second(args.chunk_size, d_model, ff_dim)
    peak = gemm_macs_per_second(256, 256, 256, repeats=50)
    floor = macs / rate
    print(f"(b) streaming RTF {rtf:.4f} (target <= 0.03); MACs/audio-s {macs:,.0f}")
    print(
        f"    GEMM rate ({args.chunk_size}x{d_model} @ {d_model}x{ff_dim}, the chunk's FFN): "
        f"{rate / 1e9:.2f} GMAC/s -> FLOP floor RTF {floor:.5f}, RTF/floor {rtf / floor:.1f}"
    )
    print(
        f"    GEMM rate (256^3, peak-like): {peak / 1e9:.2f} GMAC/s -> floor {macs / peak:.5f}, "
        f"RTF/floor {rtf / (macs / peak):.1f}"
    )
    if args.equivalence:
        with torch.inference_mode():
            _print_equivalence(model)
    if args.sizes:
        _print_sizes()


if __name__ == "__main__":
    main()
