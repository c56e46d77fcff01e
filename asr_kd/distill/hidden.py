"""Hidden-state distillation: which student layer learns which teacher layer, and the learned
projections between them.

- :func:`layer_map`: student layer -> teacher layer pairs (1-based), from
  ``distill.student_layers`` / ``distill.teacher_layers`` or the default (every student layer,
  teacher layers spaced uniformly: 3 student and 6 teacher layers pair 1-2, 2-4, 3-6).
- :class:`HiddenProjection`: one ``Linear(D_s -> D_t)`` per pair, and the hidden-state term of
  the loss: a :class:`asr_kd.distill.kd_term.KDTerm` named ``hidden`` (training only: kept in
  ``AsrTask.kd_modules["hidden"]``, so inference checkpoints and exports never see it; Lightning
  checkpoints do, for resume).

The codecs of teacher layers stored on disk (``hidden_compress``) are the target store's:
:mod:`asr_kd.distill.store.codecs`.

Shapes: B batch, T frames, D_s / D_t student / teacher width, P pairs.

Usage:
    pairs = layer_map(3, 6)                               # ((1, 2), (2, 4), (3, 6))
    proj = HiddenProjection([s for s, _ in pairs], 64, [192] * 3, weight=3.0)
    projected = proj(student_hidden)                      # P x (B, T, 192)
    loss, hidden = proj.add_to(loss, KDStep(batch, out_lens, student_hidden, teacher))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from asr_kd.distill.kd_term import KDStep, KDTerm
from asr_kd.distill.losses import hidden_state_loss
from asr_kd.errors import ConfigError

__all__ = ["HiddenProjection", "check_layers", "layer_map"]


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
