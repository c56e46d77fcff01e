"""Hidden-state distillation: which student layer learns which teacher layer, the learned
projections between them, and the compression of teacher layers stored on disk.

- :func:`layer_map`: student layer -> teacher layer pairs (1-based), from
  ``distill.student_layers`` / ``distill.teacher_layers`` or the default (every student layer,
  teacher layers spaced uniformly: 3 student and 6 teacher layers pair 1-2, 2-4, 3-6).
- :class:`HiddenProjection`: one ``Linear(D_s -> D_t)`` per pair, and the hidden-state term of
  the loss: a :class:`asr_kd.distill.kd_term.KDTerm` named ``hidden`` (training only: kept in
  ``AsrTask.kd_modules["hidden"]``, so inference checkpoints and exports never see it; Lightning
  checkpoints do, for resume).
- Codecs for stored teacher layers (``hidden_compress``): ``none`` (fp16), ``pca<N>`` (the top N
  principal directions of the train frames, fp16 coefficients) or ``int8`` (per channel: an
  offset and a scale, the channel's range over the train frames mapped onto -127..127). Fitted
  from :class:`CodecStats` of the train frames; the parameters are one float32 array per layer.

Shapes: B batch, T frames, N frames of a shard, D_s / D_t student / teacher width, P pairs.

Usage:
    pairs = layer_map(3, 6)                               # ((1, 2), (2, 4), (3, 6))
    proj = HiddenProjection([s for s, _ in pairs], 64, [192] * 3, weight=3.0)
    projected = proj(student_hidden)                      # P x (B, T, 192)
    loss, hidden = proj.add_to(loss, KDStep(batch, out_lens, student_hidden, teacher))
    stats = CodecStats(192); stats.update(frames)         # (N, 192) float
    params = fit_codec("pca16", stats)                    # (1 + 16, 192) float32
    codes = encode("pca16", params, frames)               # (N, 16) float16
    frames_again = decode("pca16", params, torch.from_numpy(codes))   # (N, 192) float32
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from asr_kd.distill.kd_term import KDStep, KDTerm
from asr_kd.distill.losses import hidden_state_loss
from asr_kd.errors import ConfigError

__all__ = [
    "CodecStats",
    "HiddenProjection",
    "check_layers",
    "codec_bytes_per_frame",
    "decode",
    "encode",
    "fit_codec",
    "layer_map",
    "parse_compress",
]


def _uniform(count: int, num_teacher: int) -> list[int]:
    """``count`` teacher layers spaced uniformly, ending at the last.

    >>> _uniform(3, 6), _uniform(4, 6), _uniform(2, 1)
    ([2, 4, 6], [1, 3, 4, 6], [1, 1])
    """
    return [max(1, (i + 1) * num_teacher // count) for i in range(count)]


def check_layers(name: str, layers: Sequence[int], num_layers: int, whose: str) -> list[int]:
    """``layers`` as ints; ConfigError naming ``name``, the value and the valid range 1..L."""
    try:
        layers = [int(x) for x in layers]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}={list(layers)!r}: expected a list of 1-based {whose} layer numbers"
        ) from None
    for layer in layers:
        if not 1 <= layer <= num_layers:
            raise ConfigError(
                f"{name} has layer {layer}, out of range: the {whose} has {num_layers} layers, "
                f"expected 1..{num_layers}"
            )
    return layers


def layer_map(
    num_student: int,
    num_teacher: int,
    student_layers: Sequence[int] | None = None,
    teacher_layers: Sequence[int] | None = None,
) -> tuple[tuple[int, int], ...]:
    """(student layer, teacher layer) pairs, 1-based; None = the default (see module docstring).

    >>> layer_map(3, 6)
    ((1, 2), (2, 4), (3, 6))
    >>> layer_map(3, 6, student_layers=[3])
    ((3, 6),)
    >>> layer_map(3, 6, teacher_layers=[1, 2, 3])
    ((1, 1), (2, 2), (3, 3))
    """
    students = list(range(1, num_student + 1)) if student_layers is None else student_layers
    students = check_layers("distill.student_layers", students, num_student, "student")
    if teacher_layers is None:
        teachers = _uniform(len(students), num_teacher)
    else:
        teachers = check_layers("distill.teacher_layers", teacher_layers, num_teacher, "teacher")
    if len(students) != len(teachers) or not students:
        raise ConfigError(
            f"distill.student_layers {students} and distill.teacher_layers {teachers}: expected "
            "lists of the same length (> 0), one teacher layer per student layer"
        )
    return tuple(zip(students, teachers, strict=True))


class HiddenProjection(KDTerm):
    """Learned ``Linear(D_s -> D_t)`` per layer pair: student layer outputs -> teacher widths;
    as a KD term, ``loss + weight * hidden_state_loss(projected, teacher layers)``.

    Args:
        student_layers: P 1-based student layers, in pair order.
        student_dim: D_s. teacher_dims: P teacher widths D_t.
        weight: the term's weight (``distill.hidden_weight``); kind: ``distill.hidden_loss``.
    """

    name = "hidden"

    def __init__(
        self,
        student_layers: Sequence[int],
        student_dim: int,
        teacher_dims: Sequence[int],
        weight: float = 1.0,
        kind: str = "l1_cos",
    ):
        super().__init__()
        if len(student_layers) != len(teacher_dims):
            raise ValueError(f"{len(student_layers)} student layers, {len(teacher_dims)} widths")
        self.student_layers = tuple(int(x) for x in student_layers)
        self.proj = nn.ModuleList(nn.Linear(student_dim, int(d)) for d in teacher_dims)
        self.weight, self.kind = weight, kind

    def forward(self, student_hidden: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Every student layer's output (L x (B, T, D_s)) -> the P projected pairs (B, T, D_t)."""
        return [
            p(student_hidden[s - 1]) for s, p in zip(self.student_layers, self.proj, strict=True)
        ]

    def add_to(self, loss: torch.Tensor, step: KDStep) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss + weight * hidden`` and ``hidden``, the distance of the projected student
        layers to the teacher's (0 when the batch has no teacher hidden states)."""
        teacher_hidden = None if step.teacher is None else step.teacher.hidden
        if teacher_hidden is None or step.student_hidden is None:
            return loss, torch.zeros_like(loss)
        projected = self(step.student_hidden)
        hidden = hidden_state_loss(projected, teacher_hidden, step.out_lens, self.kind)
        return loss + self.weight * hidden, hidden.detach()


_PCA = re.compile(r"pca([1-9][0-9]*)$")
_INT8_LEVELS = 127


def parse_compress(spec: str) -> tuple[str, int]:
    """``none`` | ``pca<N>`` | ``int8`` -> (kind, N); N is 0 unless pca.

    >>> parse_compress("pca16"), parse_compress("int8"), parse_compress("none")
    (('pca', 16), ('int8', 0), ('none', 0))
    """
    spec = str(spec)
    if spec in ("none", "int8"):
        return spec, 0
    match = _PCA.match(spec)
    if match is None:
        raise ConfigError(
            f"hidden_compress={spec!r}, expected none, int8 or pca<N> (N coefficients per "
            "layer, e.g. pca16)"
        )
    return "pca", int(match.group(1))


def codec_bytes_per_frame(spec: str, dim: int) -> int:
    """Stored bytes per frame of one layer of width ``dim``.

    >>> [codec_bytes_per_frame(s, 192) for s in ("none", "int8", "pca16")]
    [384, 192, 32]
    """
    kind, n = parse_compress(spec)
    return {"none": 2 * dim, "int8": dim, "pca": 2 * n}[kind]


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


def fit_codec(spec: str, stats: CodecStats) -> np.ndarray:
    """The codec's parameters, float32: none (0, D); int8 (2, D) [offset; scale]; pca<N>
    (1 + N, D) [mean; N orthonormal directions, largest variance first]."""
    kind, n = parse_compress(spec)
    dim = len(stats.sum)
    if kind == "none":
        return np.zeros((0, dim), np.float32)
    if stats.count == 0:
        raise ConfigError(f"hidden_compress={spec}: no train frames to fit it on")
    if kind == "int8":
        offset = (stats.max + stats.min) / 2
        scale = np.maximum((stats.max - stats.min) / (2 * _INT8_LEVELS), 1e-8)
        return np.stack([offset, scale]).astype(np.float32)
    if n > dim:
        raise ConfigError(f"hidden_compress={spec}: {n} coefficients > layer width {dim}")
    mean = stats.sum / stats.count
    cov = stats.outer / stats.count - np.outer(mean, mean)
    _, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
    basis = vectors[:, ::-1][:, :n].T  # (N, D)
    return np.concatenate([mean[None], basis]).astype(np.float32)


def encode(spec: str, params: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(N, D) float frames -> stored codes: fp16 (N, D), int8 (N, D) or fp16 (N, pca N)."""
    kind, _ = parse_compress(spec)
    x = np.asarray(frames, dtype=np.float32)
    if kind == "none":
        return x.astype(np.float16)
    if kind == "int8":
        q = np.rint((x - params[0]) / params[1])
        return np.clip(q, -_INT8_LEVELS, _INT8_LEVELS).astype(np.int8)
    return ((x - params[0]) @ params[1:].T).astype(np.float16)


def decode(spec: str, params: torch.Tensor | np.ndarray, codes: torch.Tensor) -> torch.Tensor:
    """Stored codes (..., C) -> frames (..., D) float32 (``params`` from :func:`fit_codec`)."""
    kind, _ = parse_compress(spec)
    x = codes.float()
    if kind == "none":
        return x
    params = torch.as_tensor(params, dtype=torch.float32, device=x.device)
    if kind == "int8":
        return x * params[1] + params[0]
    return x @ params[1:] + params[0]
