"""Attention masks for full-context and chunk-wise (streaming) Conformers, as pure functions.

Convention: a boolean mask is ``True`` where attention (or a frame) is allowed/valid, the
convention of :func:`torch.nn.functional.scaled_dot_product_attention`. Chunk sizes count
encoder frames (after subsampling). The masks follow WeNet's dynamic chunk training
(``wenet/utils/mask.py``, Zhang et al. 2020, "Unified Streaming and Non-streaming Two-pass
End-to-end Model for Speech Recognition"): frame ``t`` belongs to chunk ``t // chunk_size``
and sees every frame of its own chunk and of the ``left_chunks`` chunks before it.
"""

from __future__ import annotations

import torch

from asr_kd.errors import ConfigError

__all__ = ["attention_mask", "chunk_attention_mask", "padding_mask"]


def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``True`` for the valid (non-padding) frames of a batch.

    Args:
        lengths: (B,) integer lengths.
        max_len: T, the padded length; ``lengths.max()`` when None.

    Returns:
        (B, T) bool.

    Example:
        >>> padding_mask(torch.tensor([3, 1]), 4).int()
        tensor([[1, 1, 1, 0],
                [1, 0, 0, 0]], dtype=torch.int32)
    """
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    frames = torch.arange(max_len, device=lengths.device)
    return frames[None, :] < lengths[:, None]


def chunk_attention_mask(
    num_frames: int,
    chunk_size: int,
    left_chunks: int = -1,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Which key frame each query frame may attend to when the input is processed in chunks.

    Query ``q`` (row) sees key ``k`` (column) iff ``chunk(k) <= chunk(q)`` and, when
    ``left_chunks >= 0``, ``chunk(k) >= chunk(q) - left_chunks``; ``chunk(t) = t // chunk_size``.
    A shorter last chunk behaves like the last call of a stream (``flush``).

    Args:
        num_frames: T, encoder frames.
        chunk_size: frames per chunk (> 0).
        left_chunks: chunks of left context; -1 = unlimited.

    Returns:
        (T, T) bool, rows = queries, columns = keys.

    Example:
        >>> chunk_attention_mask(5, 2, left_chunks=1).int()
        tensor([[1, 1, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [1, 1, 1, 1, 0],
                [1, 1, 1, 1, 0],
                [0, 0, 1, 1, 1]], dtype=torch.int32)
        >>> chunk_attention_mask(3, 1).int()  # chunk 1, unlimited left: causal
        tensor([[1, 0, 0],
                [1, 1, 0],
                [1, 1, 1]], dtype=torch.int32)
    """
    if chunk_size <= 0:
        raise ConfigError(f"chunk_size must be > 0 encoder frames, got {chunk_size}")
    if left_chunks < -1:
        raise ConfigError(f"left_chunks must be >= 0 or -1 (unlimited), got {left_chunks}")
    chunk = torch.arange(num_frames, device=device) // chunk_size
    query, key = chunk[:, None], chunk[None, :]
    mask = key <= query
    if left_chunks >= 0:
        mask &= key >= query - left_chunks
    return mask


def attention_mask(
    lengths: torch.Tensor,
    max_len: int,
    chunk_size: int | None = None,
    left_chunks: int = -1,
) -> torch.Tensor:
    """Full self-attention mask of a padded batch: chunk mask AND valid keys.

    Valid queries never see padding keys, so their outputs do not depend on padding. Padding
    queries are allowed every key: their outputs are discarded, and a row with no allowed key
    would make softmax produce NaN.

    Args:
        lengths: (B,) valid encoder frames per utterance.
        max_len: T.
        chunk_size: frames per chunk; None = full context.
        left_chunks: chunks of left context, -1 = unlimited (ignored for full context).

    Returns:
        (B, T, T) bool.

    Example:
        >>> attention_mask(torch.tensor([3]), 4, chunk_size=2)[0].int()
        tensor([[1, 1, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 1, 0],
                [1, 1, 1, 1]], dtype=torch.int32)
    """
    valid = padding_mask(lengths, max_len)  # (B, T)
    mask = valid[:, None, :].expand(-1, max_len, -1)
    if chunk_size is not None:
        mask = mask & chunk_attention_mask(max_len, chunk_size, left_chunks, lengths.device)
    return mask | ~valid[:, :, None]
