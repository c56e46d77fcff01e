"""Greedy CTC: the best path's collapse rule (repeats merged, blanks dropped), batched.

Used by training (dev WER) and by every decoder of :mod:`asr_kd.inference`.

Usage:
    ids = greedy_ctc(log_probs, out_lens, blank_id=tokenizer.blank_id)
    texts = [tokenizer.decode(seq) for seq in ids]
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["collapse_ids", "greedy_ctc"]


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
    ids = log_probs.argmax(dim=-1).cpu().numpy()  # (B, T')
    lens = out_lens.tolist()
    return [collapse_ids(row[:n], blank_id=blank_id) for row, n in zip(ids, lens, strict=True)]


def collapse_ids(frame_ids: np.ndarray, previous: int = -1, blank_id: int = 0) -> list[int]:
    """CTC best path of (T,) per-frame argmax ids following a frame whose id was ``previous``:
    merge repeats, drop blanks.

    >>> collapse_ids(np.array([1, 1, 0, 1, 2, 2]), previous=1)
    [1, 2]
    """
    before = np.concatenate(([previous], frame_ids[:-1]))
    return frame_ids[(frame_ids != before) & (frame_ids != blank_id)].tolist()
