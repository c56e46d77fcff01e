"""What one streamed chunk of a CTC search costs at two points of a long utterance: the figure
behind "the per-chunk cost does not grow with the audio already decoded".

Log-probs are synthetic (the search's cost depends on the beam, the vocabulary and the LM, not
on a model): a text spelled one token per ``frames_per_token`` frames (the token, then blanks),
plus Gaussian noise so that the beam holds real alternatives. The chunk is timed after the stream
has decoded ``at_frames`` frames, with or without a partial transcript after it.

The command that prints them is ``python -m asr_kd.cli.search_benchmark``.

Usage:
    log_probs = spelled_log_probs(tokenizer, text, frames_per_token=3, noise=1.5)
    chunk_cost_ms(search, log_probs, at_frames=1500, chunk_frames=8, partials=True)
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from asr_kd.inference.search import CtcSearch

__all__ = ["chunk_cost_ms", "spelled_log_probs"]


def spelled_log_probs(
    tokenizer: Any, text: str, frames_per_token: int = 3, noise: float = 1.5, seed: int = 0
) -> torch.Tensor:
    """(T, V) log-probs of ``text``: each token on one frame, then ``frames_per_token - 1``
    blanks, the rest of the frame 6 nats below, plus ``noise`` x N(0, 1).

    >>> from asr_kd.data.tokenizer import Tokenizer
    >>> spelled_log_probs(Tokenizer.char(), "AB", 3, 0.0).argmax(-1).tolist()
    [3, 0, 0, 4, 0, 0]
    """
    ids = torch.tensor(tokenizer.encode(text))
    frames = torch.full((len(ids), frames_per_token), tokenizer.blank_id)
    frames[:, 0] = ids
    frames = frames.flatten()
    log_probs = torch.full((len(frames), tokenizer.vocab_size), -6.0)
    log_probs[torch.arange(len(frames)), frames] = 0.0
    generator = torch.Generator().manual_seed(seed)
    return (log_probs + noise * torch.randn(log_probs.shape, generator=generator)).log_softmax(-1)


def chunk_cost_ms(
    search: CtcSearch,
    log_probs: torch.Tensor,
    at_frames: int,
    chunk_frames: int,
    partials: bool,
    chunks: int = 25,
) -> float:
    """Median CPU milliseconds of one chunk of ``chunk_frames`` frames (``extend``, then
    ``text`` if ``partials``) over the ``chunks`` chunks after the first ``at_frames`` frames of
    ``log_probs`` (T, V), which are streamed first in chunks of the same size, untimed. CPU
    time (``time.process_time``; one thread) rather than wall time: a shared machine's other
    jobs delay a chunk without adding to its cost."""
    needed = at_frames + chunks * chunk_frames
    if log_probs.shape[0] < needed:
        raise ValueError(f"{log_probs.shape[0]} frames of log-probs, {needed} needed")
    stream = search.stream()
    for start in range(0, at_frames, chunk_frames):
        stream.extend(log_probs[start : min(start + chunk_frames, at_frames)])
        if partials:
            stream.text  # noqa: B018 (a stream that shows partials builds them all along)
    times = []
    for start in range(at_frames, needed, chunk_frames):
        begin = time.process_time()
        stream.extend(log_probs[start : start + chunk_frames])
        if partials:
            stream.text  # noqa: B018
        times.append(time.process_time() - begin)
    stream.finalize()
    return 1000.0 * statistics.median(times)
