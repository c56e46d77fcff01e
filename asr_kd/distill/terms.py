"""The training-only KD terms (:class:`asr_kd.distill.kd_term.KDTerm`), one entry per term.

Each entry builds its term from the ``distill`` settings, the student and the teacher targets,
or returns None when the settings leave it off. :func:`build_kd_terms` is the one place the
terms of a run are made; a new term is one class and one entry here.

Usage:
    terms = build_kd_terms(kd, student, setup)       # {"hidden": HiddenProjection, ...}
    task = AsrTask(student, ..., kd=kd, targets=targets, kd_modules=terms)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from asr_kd.distill.hidden import HiddenProjection
from asr_kd.distill.inter_ctc import InterCTCHeads, resolve_inter_layers
from asr_kd.distill.kd_term import KDTerm
from asr_kd.distill.teachers import TeacherSetup
from asr_kd.schemas import KDConfig

__all__ = ["KD_TERMS", "build_kd_terms"]


def _hidden(kd: KDConfig, student: nn.Module, setup: TeacherSetup) -> HiddenProjection | None:
    """Hidden-state KD: one projection per layer pair of the teacher set-up (``hidden_pairs``,
    set when ``distill.hidden_weight`` is not 0), to the widths of their teacher layers."""
    if not setup.hidden_pairs:
        return None
    students = [s for s, _ in setup.hidden_pairs]
    dims = setup.targets.hidden_dims
    return HiddenProjection(students, int(student.d_model), dims, kd.hidden_weight, kd.hidden_loss)


def _inter_ctc(kd: KDConfig, student: nn.Module, setup: TeacherSetup) -> InterCTCHeads | None:
    """Inter-KD: CTC heads on ``distill.inter_layers`` (checked) when ``distill.inter_weight``
    is above 0."""
    if kd.inter_weight <= 0:
        return None
    layers = resolve_inter_layers(kd.inter_layers, num_layers=len(student.layers))
    return InterCTCHeads(
        layers, d_model=student.d_model, vocab_size=student.vocab_size,
        weight=kd.inter_weight, loss_options=kd.loss_options(),
    )  # fmt: skip


# In the order the training step adds them to the loss (and their parameters are created).
KD_TERMS: dict[str, Callable[[KDConfig, nn.Module, TeacherSetup], KDTerm | None]] = {
    HiddenProjection.name: _hidden,
    InterCTCHeads.name: _inter_ctc,
}


def build_kd_terms(kd: KDConfig, student: nn.Module, setup: TeacherSetup) -> dict[str, KDTerm]:
    """The terms ``kd`` turns on for the teacher ``setup``, by name, in :data:`KD_TERMS` order."""
    terms = {}
    for name, build in KD_TERMS.items():
        term = build(kd, student, setup)
        if term is not None:
            terms[name] = term
    return terms
