"""Streaming benchmark measurements: per-chunk cost on long audio, streaming RTF, the one-thread
GEMM rate (for the FLOP floor) and streaming-vs-full equivalence, on a model built from its
config (random weights: the cost does not depend on them).

The command that prints them is ``python -m asr_kd.cli.benchmark``.

Usage:
    model = model_from_config("student_tiny")       # conf/model/student_tiny.yaml, random weights
    bounded_cost(model, chunk_size=8, left_chunks=4)["ratio"]
    streaming_rtf(model, 8, 4), equivalence(model, 8, 4, synthetic_fbank(12.0))
"""

from __future__ import annotations

import math
import statistics
import time

import hydra.utils
import torch
from omegaconf import OmegaConf

from asr_kd.config import CONF_DIR

__all__ = [
    "CONF_MODEL",
    "bounded_cost",
    "equivalence",
    "gemm_macs_per_second",
    "model_from_config",
    "streaming_rtf",
    "synthetic_fbank",
    "synthetic_wave",
]

CONF_MODEL = CONF_DIR / "model"
_FRAMES_PER_SECOND = 100  # 10 ms fbank


def model_from_config(name: str):
    """``conf/model/<name>.yaml`` instantiated (random weights), in eval mode."""
    return hydra.utils.instantiate(OmegaConf.load(CONF_MODEL / f"{name}.yaml")).eval()


def synthetic_wave(seconds: float, seed: int = 0) -> torch.Tensor:
    """(N,) 16 kHz samples in [-1, 1] of a synthetic voiced signal (a gliding harmonic tone and
    noise, at about a tenth of full scale)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    phase = 2 * math.pi * torch.cumsum(140 + 60 * torch.sin(2 * math.pi * 0.5 * t), 0) / 16000
    wave = sum(torch.sin(k * phase) / k for k in range(1, 8)) + 0.1 * torch.randn(
        len(t), generator=g
    )
    return wave * (3000 / 32768)


def synthetic_fbank(seconds: float, seed: int = 0) -> torch.Tensor:
    """(1, T, 80) kaldi fbank of :func:`synthetic_wave` (realistic value ranges)."""
    import torchaudio.compliance.kaldi as kaldi

    wave = synthetic_wave(seconds, seed) * 32768  # kaldi's fbank reads int16-scaled samples
    return kaldi.fbank(wave[None], num_mel_bins=80, dither=0.0)[None]


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bounded_cost(model, chunk_size: int, left_chunks: int, repeats: int = 300) -> dict:
    """Median time of one chunk after 5 s and after 60 s of audio, and their ratio.

    The two are timed alternately, so load from other processes hits both alike.
    """
    step = chunk_size * model.subsampling_factor  # input frames per chunk
    feats = synthetic_fbank(61.0)
    calls = {}
    for seconds in (5, 60):
        state = model.init_state(1, chunk_size, left_chunks)
        start = seconds * _FRAMES_PER_SECOND // step * step
        _, state = model.forward_chunk(feats[:, :start], state)
        calls[seconds] = (feats[:, start : start + step], state)
    times: dict[int, list[float]] = {5: [], 60: []}
    for _ in range(repeats):
        for seconds, (piece, state) in calls.items():
            start = time.perf_counter()
            model.forward_chunk(piece, state)
            times[seconds].append(time.perf_counter() - start)
    at_5, at_60 = statistics.median(times[5]), statistics.median(times[60])
    return {"ms_at_5s": 1e3 * at_5, "ms_at_60s": 1e3 * at_60, "ratio": at_60 / at_5}


def streaming_rtf(model, chunk_size: int, left_chunks: int, seconds: float = 60.0) -> float:
    """Processing seconds / audio seconds, feeding ``chunk_size`` encoder frames at a time."""
    step = chunk_size * model.subsampling_factor
    feats = synthetic_fbank(seconds)

    def run() -> None:
        state = model.init_state(1, chunk_size, left_chunks)
        for start in range(0, feats.size(1), step):
            _, state = model.forward_chunk(feats[:, start : start + step], state)
        model.flush(state)

    run()  # warm-up: allocator, kernel selection, rotary table
    return min(_median_seconds(run, 1) for _ in range(3)) / seconds


def gemm_macs_per_second(m: int, k: int, n: int, repeats: int = 2000) -> float:
    """Measured (m, k) @ (k, n) fp32 matmul rate on the current thread setting, MAC/s."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(10):
        torch.matmul(a, b)
    inner = max(1, repeats // 10)

    def run() -> None:
        for _ in range(inner):
            torch.matmul(a, b)

    return m * k * n * inner / _median_seconds(run, 10)


def equivalence(model, chunk_size: int, left_chunks: int, feats: torch.Tensor) -> float:
    """Max |streaming - full forward| log-prob difference, feeding pieces of 1..50 frames."""
    full, _ = model(feats, torch.tensor([feats.size(1)]), chunk_size, left_chunks)
    g = torch.Generator().manual_seed(chunk_size)
    state, outs, start = model.init_state(1, chunk_size, left_chunks), [], 0
    while start < feats.size(1):
        size = int(torch.randint(1, 51, (), generator=g))
        out, state = model.forward_chunk(feats[:, start : start + size], state)
        outs.append(out)
        start += size
    outs.append(model.flush(state)[0])
    return (torch.cat(outs, dim=1) - full).abs().max().item()
