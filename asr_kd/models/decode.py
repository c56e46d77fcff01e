"""Greedy CTC decoding: batched offline, and streaming with a partial transcript per chunk.

Usage:
    ids = greedy_ctc(log_probs, out_lens, blank_id=tokenizer.blank_id)
    texts = [tokenizer.decode(seq) for seq in ids]

    decoder = StreamingGreedyDecoder(model, tokenizer, chunk_size=8, left_chunks=4)
    for piece in pieces:                  # (t, 80) or (1, t, 80) raw fbank, any t
        print(decoder.accept(piece))      # partial transcript so far
    text = decoder.finalize()             # == offline greedy text with the same chunk mask
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["StreamingGreedyDecoder", "greedy_ctc"]


def _collapse(ids: torch.Tensor, previous: torch.Tensor, blank_id: int) -> torch.Tensor:
    """Keep mask for CTC collapse: (B, T) ids, (B,) id before frame 0 (-1 = none) -> (B, T)."""
    shifted = torch.cat((previous[:, None], ids[:, :-1]), dim=1)
    return (ids != shifted) & (ids != blank_id)


def greedy_ctc(
    log_probs: torch.Tensor, out_lens: torch.Tensor, blank_id: int = 0
) -> list[list[int]]:
    """Best path per utterance: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: (B, T', V) CTC (log-)probabilities.
        out_lens: (B,) valid frames.
        blank_id: CTC blank.

    Returns:
        B lists of token ids.

    Example:
        >>> lp = torch.log(torch.tensor([[[.1, .9, 0], [.1, .9, 0], [.9, .1, 0], [0, .9, .1],
        ...                               [0, 0, 1.]]]))
        >>> greedy_ctc(lp, torch.tensor([4]))   # 1 1 _ 1 | padding
        [[1, 1]]
    """
    ids = log_probs.argmax(dim=-1)  # (B, T')
    frames = torch.arange(ids.size(1), device=ids.device)
    keep = _collapse(ids, torch.full_like(ids[:, 0], -1), blank_id)
    keep &= frames[None, :] < out_lens[:, None].to(ids.device)
    return [row[mask].tolist() for row, mask in zip(ids, keep, strict=True)]


class StreamingGreedyDecoder:
    """Streams one utterance through a streaming ``ConformerCTC`` and decodes greedily.

    The model state and the last frame's argmax (so a token repeated across a chunk boundary
    is merged, as offline) persist between calls; ``finalize`` flushes the last partial chunk.

    Args:
        model: a streaming ``ConformerCTC`` (put in eval mode here).
        tokenizer: anything with ``.decode(ids) -> str`` and ``.blank_id``.
        chunk_size: encoder frames per chunk.
        left_chunks: attention left context in chunks; -1 = unlimited.
    """

    def __init__(self, model: Any, tokenizer: Any, chunk_size: int, left_chunks: int = -1):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.left_chunks = left_chunks
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self.state = self.model.init_state(1, self.chunk_size, self.left_chunks)
        ref = self.model.cmvn_mean
        self._last = torch.full((1,), -1, dtype=torch.long, device=ref.device)
        self.token_ids: list[int] = []

    def accept(self, feats_chunk: torch.Tensor) -> str:
        """Feed (t, F) or (1, t, F) raw fbank frames; return the partial transcript."""
        if feats_chunk.dim() == 2:
            feats_chunk = feats_chunk.unsqueeze(0)
        log_probs, self.state = self.model.forward_chunk(feats_chunk, self.state)
        self._extend(log_probs)
        return self.text

    def finalize(self) -> str:
        """End of utterance: decode the buffered tail and return the final transcript."""
        log_probs, self.state = self.model.flush(self.state)
        self._extend(log_probs)
        return self.text

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.token_ids)

    def _extend(self, log_probs: torch.Tensor) -> None:
        if log_probs.size(1) == 0:
            return
        ids = log_probs.argmax(dim=-1)  # (1, n)
        keep = _collapse(ids, self._last, self.tokenizer.blank_id)
        self.token_ids += ids[keep].tolist()
        self._last = ids[:, -1]
