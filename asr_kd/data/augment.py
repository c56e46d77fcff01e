"""SpecAugment (Park et al., 2019, arXiv:1904.08779): frequency and time masks, no time warp.

Applied by the training step to the raw fbank of a padded batch, so an online teacher can still
see the clean features. Masks are built by broadcasting comparisons (no loop over frames or
utterances); time masks scale with each utterance's own length and never touch the padding.
Masked values become the utterance's mean over its valid frames: with CMVN inside the model that
is close to a zero after normalisation, where a literal 0 would be a loud log-mel value.

Usage:
    spec_augment = SpecAugment()                    # training mode: masks; eval mode: identity
    feats = spec_augment(feats, feat_lens)          # (B, T, F) -> (B, T, F)
    feats = spec_augment(feats, feat_lens, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SpecAugment"]


def _band_mask(
    num_masks: int, max_width: torch.Tensor, size: torch.Tensor, axis_len: int, generator
) -> torch.Tensor:
    """``(B, axis_len)`` bool: ``num_masks`` bands per row, widths in ``[0, max_width]``, inside ``size``.

    ``max_width`` and ``size`` are ``(B,)`` tensors (per-row limits).
    """
    batch = size.shape[0]
    shape = (batch, num_masks)
    u_width = torch.rand(shape, generator=generator, device=size.device)
    u_start = torch.rand(shape, generator=generator, device=size.device)
    width = (u_width * (max_width[:, None].float() + 1)).floor().long()
    width = torch.minimum(width, size[:, None])
    start = (u_start * (size[:, None] - width + 1).float()).floor().long()
    pos = torch.arange(axis_len, device=size.device)[None, None, :]  # (1, 1, L)
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # (B, M, L)
    return inside.any(dim=1)


@dataclass(eq=False, repr=False)  # the config keys are the fields; nn.Module keeps its repr
class SpecAugment(nn.Module):
    """Frequency and time masking of a padded batch.

    Args:
        num_freq_masks: frequency bands per utterance.
        freq_mask_width: widest frequency band (bins); 27 of 80 is the LibriSpeech policy.
        num_time_masks: time bands per utterance.
        time_mask_ratio: widest time band as a fraction of the utterance's length (0.05 as in
            the adaptive policy of Park et al., 2020), so short utterances are not wiped out.
        p: probability that an utterance is augmented at all.
    """

    num_freq_masks: int = 2
    freq_mask_width: int = 27
    num_time_masks: int = 4
    time_mask_ratio: float = 0.05
    p: float = 1.0

    def __post_init__(self) -> None:
        super().__init__()  # nn.Module's state (train/eval); the fields are plain attributes

    def forward(
        self,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Masked copy of ``feats`` (B, T, F); ``feat_lens`` (B,). Identity in eval mode."""
        if not self.training:
            return feats
        batch, frames, bins = feats.shape
        device = feats.device
        lens = feat_lens.to(device).long().clamp(max=frames)
        valid = torch.arange(frames, device=device)[None, :] < lens[:, None]  # (B, T)
        # Per-utterance mean over valid frames and all bins: the fill value.
        denom = (lens * bins).clamp(min=1).to(feats.dtype)
        fill = (feats * valid[..., None]).sum(dim=(1, 2)) / denom  # (B,)
        full_bins = torch.full((batch,), bins, device=device, dtype=torch.long)
        freq = _band_mask(
            self.num_freq_masks,
            torch.full((batch,), self.freq_mask_width, device=device),
            full_bins,
            bins,
            generator,
        )  # (B, F)
        max_time = (lens.float() * self.time_mask_ratio).floor().long()
        time = _band_mask(self.num_time_masks, max_time, lens, frames, generator)  # (B, T)
        chosen = torch.rand(batch, generator=generator, device=device) < self.p  # (B,)
        mask = (time[:, :, None] | freq[:, None, :]) & valid[..., None] & chosen[:, None, None]
        return torch.where(mask, fill[:, None, None].to(feats.dtype), feats)

    def extra_repr(self) -> str:
        return (
            f"freq {self.num_freq_masks}x<={self.freq_mask_width}, "
            f"time {self.num_time_masks}x<={self.time_mask_ratio:.0%} of length, p={self.p}"
        )
