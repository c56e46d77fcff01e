"""The teacher interface, its asr_kd-checkpoint implementation, and the registry of sources.

A teacher is named by a source string (``teacher_ckpt``): an asr_kd checkpoint path, or
``hf:<dir|hub id>[@revision]`` for any transformers CTC model
(:class:`asr_kd.distill.hf_teacher.TransformersTeacher`). :func:`open_teacher` picks the
implementation from :data:`TEACHER_SOURCES` (the longest prefix of the source that is a key);
a new kind of teacher is one new class and one new entry, and the code that uses a teacher (the
dump, online distillation, pseudo-labels) never asks which one it has.

Each implementation owns what differs between sources (:class:`Teacher`): its fingerprint (the
identity stored with its soft targets), its targets callable (posteriors at the student's frame
rate and vocabulary, hidden states, and the last batch's greedy pseudo-labels), its frame shift,
the check of the student's tokenizer and frame rate, and whether it reads audio or our fbank.

The model-loading half of the same table lives one layer down
(:data:`asr_kd.models.loading.MODEL_SOURCES`: evaluate, transcribe and export load models by
source string too); :data:`TEACHER_SOURCES` has the same keys (a test checks it).

Usage:
    teacher = open_teacher("exp/teacher/checkpoints/last.ckpt")   # or "hf:<dir>", device="cuda"
    teacher.check_vocab(student_tokenizer, "DATA/lang"); teacher.check_frame_rate(40.0)
    targets = teacher.targets(temperature=2.0, k=8, layers=(6,), student_shift_ms=40.0)
    ids, probs, lens, hidden = targets(batch); labels = targets.greedy()
    fingerprint = teacher.fingerprint(8, 2.0, 40.0, hidden_layers=(6,))
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from asr_kd.checkpoint import file_sha256
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.distill.hf_teacher import TransformersTeacher
from asr_kd.distill.losses import soften_teacher
from asr_kd.distill.output import TeacherOutput, require_same_tokenizer
from asr_kd.distill.pseudo import greedy_labels
from asr_kd.distill.store import check_int16_vocab, teacher_fingerprint
from asr_kd.errors import ConfigError
from asr_kd.models.loading import LoadedModel, load_checkpoint_model, source_prefix

__all__ = [
    "TEACHER_SOURCES",
    "CheckpointTeacher",
    "OnlineTeacher",
    "Teacher",
    "open_teacher",
    "teacher_class",
]


class Teacher(Protocol):
    """What the dump, online distillation and pseudo-labels need of a teacher."""

    source: str  # the source string it was opened from
    tokenizer: Tokenizer  # the student tokenizer its ids are (or are mapped) in
    needs_audio: bool  # its targets read the batch's 16 kHz audio (else our fbank)
    frame_shift_ms: float  # its own output frame shift
    num_layers: int
    hidden_size: int  # D_t, the width of each layer's output

    @classmethod
    def open(
        cls, source: str, device: str | torch.device, bf16: bool, dtype: torch.dtype | None
    ) -> Teacher:
        """Load it on ``device``; ``bf16``: its forward under bfloat16 autocast (the dump);
        ``dtype``: the weights' dtype an online teacher may take from the trainer's precision
        (None: float32)."""

    def fingerprint(
        self,
        k: int,
        temperature: float,
        student_shift_ms: float,
        hidden_layers: Sequence[int] = (),
        hidden_compress: str = "none",
    ) -> dict:
        """The identity of its soft targets at ``student_shift_ms`` (the store's index)."""

    def targets_shift_ms(self, student_shift_ms: float) -> float:
        """The frame shift its targets are made at for a student of ``student_shift_ms``."""

    def check_vocab(self, tokenizer: Tokenizer, where: str) -> None:
        """``ConfigError`` naming both unless ``tokenizer`` (in ``where``) is its own."""

    def check_frame_rate(self, student_shift_ms: float) -> None:
        """``ConfigError`` naming both unless its frames convert to the student's."""

    def targets(
        self,
        temperature: float,
        k: int | None,
        layers: Sequence[int] = (),
        student_shift_ms: float = 40.0,
        device: torch.device | str | None = None,
    ):
        """``(batch) -> TeacherOutput`` at the student's frames, with ``greedy()``,
        ``hidden_dims`` and ``needs_audio`` (:class:`OnlineTeacher`'s shape)."""


class OnlineTeacher:
    """A frozen asr_kd model run on the (clean) fbank batch: ``(batch) -> TeacherOutput``.

    Args:
        model: a ConformerCTC (eval mode, no grad here).
        temperature, k: the distillation temperature; ids kept per frame (None: all).
        hidden_layers: 1-based teacher layers whose outputs go into ``TeacherOutput.hidden``,
            in this order (repeats allowed); () = no hidden states (``hidden`` None).
        device: where to run (the batch moves there: the dump); None runs on the batch's device
            (the model moves there: training, where Lightning places the batch).
        autocast: ``torch.bfloat16`` runs the forward under autocast on its device (the
            posteriors are softened in float32); None: float32.
    """

    needs_audio = False

    def __init__(
        self,
        model: nn.Module,
        temperature: float,
        k: int | None = None,
        hidden_layers: Sequence[int] = (),
        device: torch.device | str | None = None,
        autocast: torch.dtype | None = None,
    ):
        self.model = model.eval().requires_grad_(False)
        self.temperature, self.k, self.device = temperature, k, device
        self.autocast = autocast
        self.hidden_layers = tuple(int(x) for x in hidden_layers)
        self.hidden_dims = (int(model.d_model),) * len(self.hidden_layers)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, batch: dict) -> TeacherOutput:
        device = batch["feats"].device if self.device is None else self.device
        feats, feat_lens = batch["feats"].to(device), batch["feat_lens"].to(device)
        if next(self.model.parameters()).device != feats.device:
            self.model.to(feats.device)
        self.model.eval()
        hidden = None
        precision = (
            contextlib.nullcontext()
            if self.autocast is None
            else torch.autocast(feats.device.type, dtype=self.autocast)
        )
        with torch.no_grad(), precision:
            if self.hidden_layers:
                log_probs, lens, layers = self.model(feats, feat_lens, return_hidden=True)
                hidden = tuple(layers[i - 1] for i in self.hidden_layers)
            else:
                log_probs, lens = self.model(feats, feat_lens)
        log_probs = log_probs.float()  # a no-op in float32; bf16 log-probs soften in float32
        self._last = (log_probs, lens)
        ids, probs = soften_teacher(log_probs, self.temperature, self.k)
        return TeacherOutput(ids, probs, lens, hidden)

    def greedy(self) -> list[tuple[list[int], float]]:
        """Pseudo-labels of the last batch (:func:`asr_kd.distill.pseudo.greedy_labels`, at
        temperature 1, from the same forward pass)."""
        return greedy_labels(*self._last)


class CheckpointTeacher:
    """An asr_kd checkpoint (``asr-kd-train``) as the teacher: our fbank in, our tokenizer, its
    own frame rate (the student must share both; no conversion)."""

    needs_audio = False

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "cpu", bf16: bool = False):
        self.loaded, self.source, self.bf16 = loaded, str(loaded.path), bf16
        self.model = loaded.model.to(device)
        self.tokenizer = loaded.tokenizer
        self.frame_shift_ms = self.model.frame_shift_ms
        self.num_layers, self.hidden_size = len(self.model.layers), int(self.model.d_model)
        self._device = device
        check_int16_vocab(self.tokenizer.vocab_size)

    @classmethod
    def open(
        cls,
        source: str,
        device: str | torch.device = "cpu",
        bf16: bool = False,
        dtype: torch.dtype | None = None,
    ):
        """``dtype`` is not taken: our teacher keeps float32 weights (its CMVN statistics would
        lose digits in bfloat16; at 104 M parameters the memory is small) and runs under the
        trainer's autocast as it is (:class:`OnlineTeacher` never switches it off)."""
        return cls(load_checkpoint_model(source), device, bf16)

    def fingerprint(
        self, k, temperature, student_shift_ms, hidden_layers=(), hidden_compress="none"
    ):
        return teacher_fingerprint(
            file_sha256(self.source), self.tokenizer.fingerprint, self.frame_shift_ms, k,
            temperature, hidden_layers, hidden_compress,
        )  # fmt: skip

    def targets_shift_ms(self, student_shift_ms: float) -> float:
        return self.frame_shift_ms  # its own: a student of another rate is refused when distilling

    def check_vocab(self, tokenizer: Tokenizer, where: str) -> None:
        fix = "identical tokenizers: give a teacher trained on this data dir (or on one prepared "
        fix += "with the same tokenizer), or set data.dir to the teacher's"
        require_same_tokenizer(self.source, self.tokenizer, tokenizer, where, fix)

    def check_frame_rate(self, student_shift_ms: float) -> None:
        mine, theirs = self.model.subsampling_factor, round(student_shift_ms / 10.0)
        if self.frame_shift_ms != student_shift_ms:
            raise ConfigError(
                f"teacher frame shift {self.frame_shift_ms} ms (subsampling {mine}, {self.source})"
                f" != student frame shift {student_shift_ms} ms (subsampling {theirs}); expected "
                f"equal output frame rates: set model.subsampling_factor={mine}"
            )

    def targets(self, temperature, k, layers=(), student_shift_ms=40.0, device=None):
        autocast = torch.bfloat16 if self.bf16 else None
        return OnlineTeacher(self.model, temperature, k, layers, device, autocast)


# The longest key that starts the source string names its implementation ("": the rest).
TEACHER_SOURCES: dict[str, type] = {"": CheckpointTeacher, "hf:": TransformersTeacher}


def teacher_class(source: str) -> type:
    """The :class:`Teacher` implementation of a source string.

    >>> teacher_class("hf:facebook/wav2vec2-base-960h").__name__, teacher_class("t.ckpt").__name__
    ('TransformersTeacher', 'CheckpointTeacher')
    """
    return TEACHER_SOURCES[source_prefix(str(source))]


def open_teacher(
    source: str,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    dtype: torch.dtype | None = None,
) -> Teacher:
    """The teacher named by ``source`` on ``device`` (``bf16``: its forward under bfloat16
    autocast; ``dtype``: its weights' dtype where the source takes one, :meth:`Teacher.open`)."""
    return teacher_class(source).open(str(source), device, bf16, dtype)
