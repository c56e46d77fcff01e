"""Codecs of the teacher layers a store holds for hidden-state distillation
(``hidden_compress``), one entry per codec in a table:

- ``none``: fp16 frames;
- ``int8``: per channel an offset and a scale, the channel's range over the train frames mapped
  onto -127..127;
- ``pca<N>``: the top N principal directions of the train frames, fp16 coefficients.

Each is fitted from the :class:`CodecStats` of the train frames; its parameters are one float32
array per layer, stored beside the shards (:func:`asr_kd.distill.store.format.codec_name`).

Shapes: N frames, D teacher width, C stored channels per frame (D, or N of pca<N>); ``...`` any
leading dims (a cut's frames (T', ...), a padded batch (B, T', ...)): every codec acts on each
frame alone.

Usage:
    stats = CodecStats(192); stats.update(frames)                 # (N, 192) float
    params = fit_codec("pca16", stats)                            # (1 + 16, 192) float32
    codes = encode_hidden("pca16", params, frames)                # (N, 16) float16
    again = decode_hidden("pca16", params, torch.from_numpy(codes))   # (N, 192) float32
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from asr_kd.errors import ConfigError

__all__ = [
    "CodecStats",
    "HiddenCodec",
    "codec_bytes_per_frame",
    "decode_hidden",
    "encode_hidden",
    "fit_codec",
    "hidden_codec",
    "parse_compress",
]

_INT8_LEVELS = 127


class CodecStats:
    """Running statistics of one layer's frames (float64): count, sum, sum of outer products,
    per-channel min and max: enough to fit any codec in one pass."""

    def __init__(self, dim: int):
        self.count = 0
        self.sum = np.zeros(dim)
        self.outer = np.zeros((dim, dim))
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)

    def update(self, frames: np.ndarray) -> None:
        """Add (N, D) frames."""
        x = np.asarray(frames, dtype=np.float64)
        self.count += len(x)
        self.sum += x.sum(0)
        self.outer += x.T @ x
        if len(x):
            self.min = np.minimum(self.min, x.min(0))
            self.max = np.maximum(self.max, x.max(0))


@dataclass(frozen=True)
class HiddenCodec(ABC):
    """The interface of one codec: ``kind`` and ``n`` (pca's coefficients, else 0) name it;
    ``fitted``: whether its parameters come from train frames."""

    kind: str
    n: int = 0
    fitted = True

    @abstractmethod
    def bytes_per_frame(self, dim: int) -> int:
        """Stored bytes per frame of one layer of width ``dim``."""

    @abstractmethod
    def fit(self, stats: CodecStats) -> np.ndarray:
        """The parameters (P, D) float32, from the train frames' statistics."""

    @abstractmethod
    def encode(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """(..., D) float32 frames -> stored codes (..., C)."""

    @abstractmethod
    def decode(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(..., C) float32 codes -> frames (..., D) float32."""


class _Fp16(HiddenCodec):
    """No parameters (0, D)."""

    fitted = False

    def bytes_per_frame(self, dim: int) -> int:
        return 2 * dim

    def fit(self, stats: CodecStats) -> np.ndarray:
        return np.zeros((0, len(stats.sum)), np.float32)

    def encode(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float16)

    def decode(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x


class _Int8(HiddenCodec):
    """Parameters (2, D): [offset; scale]."""

    def bytes_per_frame(self, dim: int) -> int:
        return dim

    def fit(self, stats: CodecStats) -> np.ndarray:
        offset = (stats.max + stats.min) / 2
        scale = np.maximum((stats.max - stats.min) / (2 * _INT8_LEVELS), 1e-8)
        return np.stack([offset, scale]).astype(np.float32)

    def encode(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        q = np.rint((x - params[0]) / params[1])
        return np.clip(q, -_INT8_LEVELS, _INT8_LEVELS).astype(np.int8)

    def decode(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * params[1] + params[0]


class _Pca(HiddenCodec):
    """Parameters (1 + N, D): [mean; N orthonormal directions, largest variance first]."""

    def bytes_per_frame(self, dim: int) -> int:
        return 2 * self.n

    def fit(self, stats: CodecStats) -> np.ndarray:
        dim = len(stats.sum)
        if self.n > dim:
            raise ConfigError(
                f"hidden_compress=pca{self.n}: {self.n} coefficients > layer width {dim}"
            )
        mean = stats.sum / stats.count
        cov = stats.outer / stats.count - np.outer(mean, mean)
        _, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
        basis = vectors[:, ::-1][:, : self.n].T  # (N, D)
        return np.concatenate([mean[None], basis]).astype(np.float32)

    def encode(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        return ((x - params[0]) @ params[1:].T).astype(np.float16)

    def decode(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x @ params[1:] + params[0]


# ``hidden_compress`` pattern -> the codec it names
_CODECS: dict[re.Pattern, Callable[[re.Match], HiddenCodec]] = {
    re.compile(r"none$"): lambda _: _Fp16("none"),
    re.compile(r"int8$"): lambda _: _Int8("int8"),
    re.compile(r"pca([1-9][0-9]*)$"): lambda match: _Pca("pca", int(match.group(1))),
}


def hidden_codec(spec: str) -> HiddenCodec:
    """The codec ``spec`` (``hidden_compress``) names; ``ConfigError`` listing the valid ones.

    >>> hidden_codec("pca16"), hidden_codec("int8").kind
    (_Pca(kind='pca', n=16), 'int8')
    """
    for pattern, make in _CODECS.items():
        if match := pattern.match(str(spec)):
            return make(match)
    raise ConfigError(
        f"hidden_compress={spec!r}, expected none, int8 or pca<N> (N coefficients per "
        "layer, e.g. pca16)"
    )


def parse_compress(spec: str) -> tuple[str, int]:
    """``none`` | ``pca<N>`` | ``int8`` -> (kind, N); N is 0 unless pca.

    >>> parse_compress("pca16"), parse_compress("int8"), parse_compress("none")
    (('pca', 16), ('int8', 0), ('none', 0))
    """
    codec = hidden_codec(spec)
    return codec.kind, codec.n


def codec_bytes_per_frame(spec: str, dim: int) -> int:
    """Stored bytes per frame of one layer of width ``dim``.

    >>> [codec_bytes_per_frame(s, 192) for s in ("none", "int8", "pca16")]
    [384, 192, 32]
    """
    return hidden_codec(spec).bytes_per_frame(dim)


def fit_codec(spec: str, stats: CodecStats) -> np.ndarray:
    """The codec's parameters, float32: none (0, D); int8 (2, D) [offset; scale]; pca<N>
    (1 + N, D) [mean; N orthonormal directions, largest variance first]."""
    codec = hidden_codec(spec)
    if codec.fitted and stats.count == 0:
        raise ConfigError(f"hidden_compress={spec}: no train frames to fit it on")
    return codec.fit(stats)


def encode_hidden(spec: str, params: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(..., D) float frames -> stored codes: fp16 (..., D), int8 (..., D) or fp16 (..., pca N)
    (``params`` from :func:`fit_codec`)."""
    return hidden_codec(spec).encode(params, np.asarray(frames, dtype=np.float32))


def decode_hidden(
    spec: str, params: torch.Tensor | np.ndarray, codes: torch.Tensor
) -> torch.Tensor:
    """Stored codes (..., C) -> frames (..., D) float32 (``params`` from :func:`fit_codec`)."""
    x = codes.float()
    params = torch.as_tensor(params, dtype=torch.float32, device=x.device)
    return hidden_codec(spec).decode(params, x)
