"""What a teacher gives the student for one batch: :class:`TeacherOutput`, and the callable type
of every teacher source (:mod:`asr_kd.distill.teachers`, :mod:`asr_kd.distill.hf_teacher`).

Usage:
    ids, probs, lens, hidden = TeacherOutput(*targets(batch))   # a 3-tuple works too
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from asr_kd.errors import ConfigError

__all__ = ["TeacherOutput", "TeacherTargets", "check_frame_counts", "require_same_tokenizer"]


class TeacherOutput(NamedTuple):
    """What a teacher gives the student for one batch.

    ids, probs: (B, T_t, k) top-k ids (int64; None when dense, k = V) and probabilities at the
    distillation temperature; lens: (B,) valid teacher frames; hidden: None, or a tuple of
    (B, T_t, D_t) teacher layer outputs (hidden-state distillation), in the configured order.
    """

    ids: torch.Tensor | None
    probs: torch.Tensor
    lens: torch.Tensor
    hidden: tuple[torch.Tensor, ...] | None = None


TeacherTargets = Callable[[dict], TeacherOutput]


def require_same_tokenizer(
    source: str, teacher_tokenizer, student_tokenizer, where: str, fix: str
) -> None:
    """A ``ConfigError`` naming both tokenizers and ``fix`` unless the teacher's (from
    ``source``) and the student's (in ``where``) have the same fingerprint; each teacher source
    says its own fix."""
    mine, theirs = teacher_tokenizer, student_tokenizer
    if mine.fingerprint != theirs.fingerprint:
        raise ConfigError(
            f"teacher vocab {mine.vocab_size} != student vocab {theirs.vocab_size} or another "
            f"tokenizer: teacher {source} ({mine.kind} tokenizer {mine.fingerprint}) does not "
            f"match the student's {theirs.kind} tokenizer {theirs.fingerprint} in {where}; "
            f"expected {fix}"
        )


def check_frame_counts(teacher_lens: torch.Tensor, student_lens: torch.Tensor, cut_ids) -> None:
    """A ``ValueError`` naming the first cut whose teacher frame count (B,) is not the
    student's (B,); a host read, so call it on CPU tensors (a loader worker, a CPU step)."""
    differ = (teacher_lens != student_lens).nonzero()
    if len(differ):
        b = int(differ[0, 0])
        raise ValueError(
            f"cut {cut_ids[b]}: teacher has {int(teacher_lens[b])} frames, "
            f"student {int(student_lens[b])} (expected equal: same features and frame rate)"
        )
