"""The interface of a training-only KD term: a loss part with modules of its own.

A term (hidden-state projections, :class:`asr_kd.distill.hidden.HiddenProjection`; Inter-CTC
heads, :class:`asr_kd.distill.inter_ctc.InterCTCHeads`; the table of them is
:mod:`asr_kd.distill.terms`) is an ``nn.Module`` that declares in one class:

- its modules: its own parameters. The training task keeps every term in
  ``task.kd_modules[name]``, beside ``task.model`` and never under it, so they are optimised
  with the student and saved in Lightning checkpoints (a resume restores them), while
  :func:`asr_kd.models.loading.load_model` (``model.`` keys) and every export leave them out;
- its loss: :meth:`KDTerm.add_to`, the training loss with this term in it;
- its log name: :attr:`KDTerm.name`, also its key in ``task.kd_modules`` (so its state_dict keys
  are ``kd_modules.<name>.*``) and its figure ``train/<name>``.

The training step calls ``loss, figure = term.add_to(loss, step)`` for each term in turn and
never asks which terms it has.

Shapes: B batch, T student output frames, D the student's d_model, L student layers.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from asr_kd.distill.output import TeacherOutput

__all__ = ["KDStep", "KDTerm"]


class KDStep(NamedTuple):
    """What a term sees of one training step.

    batch: the training batch (``tokens`` (B, U), ``token_lens`` (B,), ...); out_lens: (B,)
    valid student frames; student_hidden: every student layer's output, layer 1 first, L x
    (B, T, D) (None when the task has no terms); teacher: the teacher's targets of the batch, or
    None (CTC alone).
    """

    batch: dict
    out_lens: torch.Tensor
    student_hidden: tuple[torch.Tensor, ...] | None
    teacher: TeacherOutput | None


class KDTerm(nn.Module, abc.ABC):
    """A training-only part of the loss (see the module docstring)."""

    name: ClassVar[str]  # key in task.kd_modules, and the log's train/<name>

    @abc.abstractmethod
    def add_to(self, loss: torch.Tensor, step: KDStep) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss with this term in it, this term's own value detached for the log)``."""
