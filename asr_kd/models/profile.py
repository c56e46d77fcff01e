"""Model introspection: parameters, MACs per second of audio, algorithmic latency, size.

The figures reported as ``params``, ``macs_per_audio_s``, ``latency_ms`` and ``model_mb``
(DESIGN.md). MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls,
convolutions, attention; elementwise ops are not counted), MACs = FLOPs / 2.

Usage:
    count_params(model)                           # 3_412_765
    macs_per_audio_second(model)                  # full context, 10 s of input
    macs_per_audio_second(model, chunk_size=8)    # streaming path, left_chunks=default_left_chunks
    algorithmic_latency_ms(model, 8)              # 320.0 at 40 ms frames; None = whole utterance
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = [
    "CPU_SDPA_FLOPS",
    "algorithmic_latency_ms",
    "count_params",
    "macs_per_audio_second",
    "model_size_mb",
]

# On CPU, scaled_dot_product_attention runs this kernel, which torch's flop registry lacks
# (torch 2.14); the custom mapping receives shapes (FlopCounterMode wraps it).
CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v)
    )
}


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as CMVN excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    """Size of the persistent state (parameters + CMVN buffers) in MB (10^6 bytes)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6


def macs_per_audio_second(
    model: nn.Module,
    chunk_size: int | None = None,
    left_chunks: int | None = None,
    seconds: float = 10.0,
) -> float:
    """Multiply-accumulates per second of audio, measured on ``seconds`` of random fbank.

    Args:
        model: a ``ConformerCTC``.
        chunk_size: None measures the full forward (attention over the whole input, so the
            figure grows with ``seconds``). An int measures the streaming path
            (``forward_chunk`` with caches), the real cost of a streaming decoder.
        left_chunks: streaming left context; ``model.default_left_chunks`` when None.
        seconds: audio duration measured (10 ms fbank frames).
    """
    num_frames = round(seconds * 100)
    ref = next(model.parameters())
    feats = torch.randn(1, num_frames, model.input_dim, device=ref.device, dtype=ref.dtype)
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter,
        ):
            if chunk_size is None or not model.streaming:
                model(feats, torch.tensor([num_frames], device=ref.device))
            else:
                left = model.resolve_left_chunks(left_chunks)
                state = model.init_state(1, chunk_size, left)
                _, state = model.forward_chunk(feats, state)
                model.flush(state)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / seconds


def algorithmic_latency_ms(model: nn.Module, chunk_size: int | None) -> float | None:
    """Algorithmic latency of a chunk setting: the audio a frame waits for before it is decoded.

    ``chunk_size * frame_shift_ms``: the causal subsampling and causal convolutions add no right
    context, so the chunk is all the lookahead (the fbank window's 15 ms beyond its 10 ms
    shift is not counted, as in WeNet's and icefall's figures).

    Returns:
        Milliseconds, or None when the model needs the whole utterance first (``chunk_size``
        None, or a full-context model): the latency is the utterance length, not a constant.
        None is kept as ``null`` in results.json.
    """
    if chunk_size is None or not getattr(model, "streaming", False):
        return None
    return float(chunk_size * model.frame_shift_ms)
