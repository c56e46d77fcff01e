"""Dropout whose CPU mask costs a quarter of torch's: 16 random bits per element.

On CPU, ``nn.Dropout`` draws its mask with ``bernoulli_``, one float draw per element; on the
demo teacher that is the largest single cost of a training step after the matmuls. Here the mask
comes from raw 64-bit words of the same generator (``torch.manual_seed`` still makes a run
repeatable), cut into four 16-bit integers, one per element: element ``i`` is kept iff its integer
``u_i`` (uniform on 0..65535) is below ``keep = round((1 - p) * 65536)``. The kept elements are
scaled by ``65536 / keep``, so the expectation is exactly the input's, as with ``nn.Dropout``;
the drop rate is ``1 - keep / 65536``, within 2**-17 of ``p`` (0.100006 for p = 0.1).

On other devices (CUDA's fused Philox dropout is already cheap) and in eval mode it is
``nn.Dropout`` itself, so exported graphs and checkpoints do not change.

Usage:
    drop = Dropout(0.1)             # in place of nn.Dropout(0.1)
    y = drop(x)                     # x (any shape), y the same shape
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Dropout", "keep_mask"]

_LEVELS = 1 << 16  # values of one 16-bit random integer
_WORDS_PER_INT64 = 4  # 16-bit integers per 64-bit random word


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype=torch.float32) -> torch.Tensor:
    """A scaled dropout mask on CPU: ``65536 / keep`` where an element is kept, 0 elsewhere.

    Args:
        shape: the mask's shape (that of the tensor it multiplies).
        p: drop probability, 0 <= p <= 1 (quantised to a multiple of 2**-16).
        dtype: the mask's dtype (the input's).

    Returns:
        (shape) tensor of ``dtype``; its mean over many elements is 1.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> m = keep_mask((1000, 1000), 0.1)
        >>> round((m == 0).float().mean().item(), 2), round(m.mean().item(), 2)
        (0.1, 1.0)
    """
    keep = round((1.0 - p) * _LEVELS)
    if keep == 0:
        return torch.zeros(shape, dtype=dtype)
    numel = torch.Size(shape).numel()
    words = -(-numel // _WORDS_PER_INT64)
    # random_(lowest int64, None) fills all 64 bits uniformly (ATen's full-range path).
    bits = torch.empty(words, dtype=torch.int64).random_(torch.iinfo(torch.int64).min, None)
    # int16 reads each 16-bit lane as u - 32768 for u uniform on 0..65535.
    lanes = bits.view(torch.int16)[:numel].view(shape)
    return (lanes < keep - _LEVELS // 2).to(dtype).mul_(_LEVELS / keep)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with :func:`keep_mask`'s cheaper mask on CPU in training mode.

    Same constructor and state (none) as ``nn.Dropout``; ``inplace`` is ignored on CPU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        return x * keep_mask(x.shape, self.p, x.dtype)
