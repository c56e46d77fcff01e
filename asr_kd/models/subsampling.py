"""Causal Conv2d subsampling: fbank frames (10 ms) -> encoder frames (10 ms x factor).

The front end of Gulati et al. (2020) and WeNet (``Conv2dSubsampling4/6/8``): strided 3x3
(or 5x5) convolutions over (time, frequency) with ReLU, then a linear projection. Unlike WeNet,
time is left-padded by ``receptive_field - factor`` frames, so encoder frame ``t`` sees input
frames ``[factor*t - pad, factor*t + factor - 1]``: only past and present frames, no lookahead,
and exactly ``T // factor`` output frames. The same valid convolutions run on the streaming
buffer, so chunk-wise output equals full output.
"""

from __future__ import annotations

import torch
from torch import nn

from asr_kd.errors import ConfigError

__all__ = ["Conv2dSubsampling"]

# (kernel, stride) per conv layer along time (the same along frequency), as in WeNet.
_LAYERS: dict[int, tuple[tuple[int, int], ...]] = {
    2: ((3, 2),),
    4: ((3, 2), (3, 2)),
    6: ((3, 2), (5, 3)),
    8: ((3, 2), (3, 2), (3, 2)),
}


class Conv2dSubsampling(nn.Module):
    """Causal Conv2d subsampling by ``factor`` in {2, 4, 6, 8}.

    Args:
        input_dim: F, feature bins (80 fbank).
        d_model: D, output width.
        factor: time subsampling factor.
        channels: conv channels; WeNet uses ``d_model``, fewer keeps small models cheap
            (the second conv dominates a tiny model's MACs).

    Attributes:
        receptive_field: input frames seen by one output frame.
        left_pad: zero frames prepended so output ``t`` ends at input ``factor*t + factor - 1``.
    """

    def __init__(self, input_dim: int, d_model: int, factor: int = 4, channels: int = 64) -> None:
        super().__init__()
        if factor not in _LAYERS:
            raise ConfigError(f"subsampling_factor must be one of {sorted(_LAYERS)}, got {factor}")
        layers: list[nn.Module] = []
        in_ch, freq, stride_prod, field = 1, input_dim, 1, 1
        for kernel, stride in _LAYERS[factor]:
            layers += [nn.Conv2d(in_ch, channels, kernel, stride), nn.ReLU()]
            in_ch, freq = channels, (freq - kernel) // stride + 1
            field += (kernel - 1) * stride_prod
            stride_prod *= stride
        if freq < 1:
            raise ConfigError(f"input_dim {input_dim} too small for subsampling x{factor}")
        # Channels-last (NHWC) weights make every convolution run in that layout: oneDNN's
        # strided 3x3 convolutions and their backward are about twice as fast so on CPU
        # (teacher_small's second conv: 0.66 -> 0.30 s per update of 40 x 3 s, one thread).
        self.conv = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.out = nn.Linear(channels * freq, d_model)
        self.factor = factor
        self.receptive_field = field
        self.left_pad = field - factor

    def num_outputs(self, num_frames: int) -> int:
        """Complete output frames that ``num_frames`` (already left-padded) input frames give."""
        return max(0, (num_frames - self.receptive_field) // self.factor + 1)

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """Valid (unpadded) convolutions: (B, T, F) -> (B, num_outputs(T), D)."""
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F'), channels-last
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Subsample a padded batch.

        Args:
            x: (B, T, F) normalised features.
            lengths: (B,) valid input frames.

        Returns:
            (B, T // factor, D) encoder frames and (B,) lengths ``lengths // factor``.

        B: batch, T: input frames, F: feature bins, D: d_model.
        """
        if x.size(1) < self.factor:
            # Too short for one output frame: return an empty sequence, not a conv error.
            empty = x.new_zeros(x.size(0), 0, self.out.out_features)
            return empty, torch.zeros_like(lengths)
        x = nn.functional.pad(x, (0, 0, self.left_pad, 0))
        return self.forward_valid(x), torch.div(lengths, self.factor, rounding_mode="floor")
