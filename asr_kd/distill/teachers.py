"""Where a student's teacher targets come from: an online teacher, or a dumped target store.

A *teacher targets* object is a plain callable ``targets(batch) -> TeacherOutput(ids (B, T_t,
k), probs (B, T_t, k), lens (B,), hidden)`` that the training task calls on the clean batch
(``hidden``: the teacher's chosen layer outputs for hidden-state distillation, or None; a plain
3-tuple ``(ids, probs, lens)`` is accepted too):

- :class:`OnlineTeacher` runs a frozen teacher (eval mode, no grad) on the clean features;
- :class:`CachedTargets` reads the same numbers from an ``asr-kd-dump-targets`` store by cut id.

The teacher is deliberately *not* a submodule of the task: it is not saved in the student's
checkpoint, not wrapped by DDP and not switched to train mode by Lightning.

Before step one the teacher and the student must agree (:func:`check_compatible`): same
tokenizer (fingerprint), same output frame rate, and cached targets must carry the configured
teacher's fingerprint (checkpoint hash, tokenizer, frame shift, k, temperature). Each mismatch is
an error naming both values.

Usage:
    targets = build_teacher_targets(cfg, student, tokenizer, KDConfig(alpha=0.5, temperature=2))
    ids, probs, lens, hidden = targets(batch)
    targets.hidden_pairs        # ((student layer, teacher layer), ...) of hidden-state KD, or ()
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from asr_kd.checkpoint import file_sha256
from asr_kd.distill.frames import plan_conversion
from asr_kd.distill.hf_teacher import HFTeacher, hf_fingerprint
from asr_kd.distill.hidden import layer_map
from asr_kd.distill.losses import KDConfig, soften_teacher
from asr_kd.distill.output import TeacherOutput, TeacherTargets
from asr_kd.distill.store import SoftTargetStore, teacher_fingerprint
from asr_kd.errors import ConfigError
from asr_kd.models.hf import HFLoaded
from asr_kd.models.loading import LoadedModel, load_model

__all__ = [
    "SOURCES",
    "CachedTargets",
    "OnlineTeacher",
    "TeacherOutput",
    "TeacherTargets",
    "build_teacher_targets",
    "check_compatible",
    "hidden_pairs",
    "load_teacher",
]


# With several ranks, lhotse fills the last round of an epoch that has fewer cuts than ranks with
# copies renamed "<id>_dup<n>" (lhotse.dataset.sampling.base.mark_as_duplicate): same features,
# so the same soft targets as the original.
_LHOTSE_DUPLICATE = re.compile(r"(_dup\d+)+$")


class OnlineTeacher:
    """A frozen teacher run on the (clean) batch: ``(batch) -> TeacherOutput``.

    Args:
        hidden_layers: 1-based teacher layers whose outputs go into ``TeacherOutput.hidden``,
            in this order (repeats allowed); () = no hidden states (``hidden`` None).
    """

    def __init__(
        self,
        model: nn.Module,
        temperature: float,
        k: int | None = None,
        hidden_layers: Sequence[int] = (),
    ):
        self.model = model.eval().requires_grad_(False)
        self.temperature, self.k = temperature, k
        self.hidden_layers = tuple(int(x) for x in hidden_layers)
        self.hidden_dims = (int(model.d_model),) * len(self.hidden_layers)

    def __call__(self, batch: dict) -> TeacherOutput:
        feats = batch["feats"]
        if next(self.model.parameters()).device != feats.device:
            self.model.to(feats.device)
        self.model.eval()
        hidden = None
        with torch.no_grad():
            if self.hidden_layers:
                log_probs, lens, layers = self.model(feats, batch["feat_lens"], return_hidden=True)
                hidden = tuple(layers[i - 1] for i in self.hidden_layers)
            else:
                log_probs, lens = self.model(feats, batch["feat_lens"])
        ids, probs = soften_teacher(log_probs, self.temperature, self.k)
        return TeacherOutput(ids, probs, lens, hidden)


class CachedTargets:
    """Soft targets of the batch's cuts from a :class:`SoftTargetStore`, on the batch's device;
    with ``hidden_layers``, also those stored teacher layers (decompressed, float32)."""

    def __init__(
        self, store: SoftTargetStore, k: int | None = None, hidden_layers: Sequence[int] = ()
    ):
        self.store, self.k = store, k
        self.hidden_layers = tuple(int(x) for x in hidden_layers)
        self.hidden_dims = tuple(store.hidden_dim(layer) for layer in self.hidden_layers)

    def __call__(self, batch: dict) -> TeacherOutput:
        cut_ids = [c if c in self.store else _LHOTSE_DUPLICATE.sub("", c) for c in batch["cut_ids"]]
        ids, probs, lens = self.store.batch(cut_ids, self.k)
        device = batch["feats"].device
        hidden = None
        if self.hidden_layers:
            hidden = tuple(h.to(device) for h in self.store.hidden(cut_ids, self.hidden_layers))
        return TeacherOutput(ids.to(device), probs.to(device), lens.to(device), hidden)


SOURCES = ("none", "cached", "online")


def _check_hf_compatible(teacher: HFLoaded, student: nn.Module, s_tok, data_dir: str) -> None:
    """A transformers teacher: the student tokenizer must be the one built from its vocabulary
    (``asr-kd-prepare tokenizer=from_teacher``), its frame rate convertible (frames.py)."""
    t_tok = teacher.tokenizer
    if t_tok.fingerprint != s_tok.fingerprint:
        raise ConfigError(
            f"teacher {teacher.source} vocab {teacher.model.vocab_size} ({t_tok.vocab_size} "
            f"student ids, tokenizer {t_tok.fingerprint}) does not match the student's "
            f"{s_tok.kind} tokenizer {s_tok.fingerprint} (vocab {s_tok.vocab_size}) in "
            f"{data_dir}/lang; expected the tokenizer built from the teacher: prepare the data "
            f"with asr-kd-prepare tokenizer=from_teacher tokenizer.teacher={teacher.source}"
        )
    plan_conversion(teacher.model.frame_shift_ms, student.frame_shift_ms)  # or ConfigError


def check_compatible(
    teacher: LoadedModel | HFLoaded, student: nn.Module, student_tokenizer, data_dir: str
) -> None:
    """Raise :class:`ConfigError` (a ``ValueError``) unless teacher and student share the
    tokenizer and the frame rate (a transformers teacher: a frame rate the rules convert)."""
    if isinstance(teacher, HFLoaded):
        return _check_hf_compatible(teacher, student, student_tokenizer, data_dir)
    t_tok, s_tok = teacher.tokenizer, student_tokenizer
    if t_tok.fingerprint != s_tok.fingerprint:
        raise ConfigError(
            f"teacher vocab {t_tok.vocab_size} != student vocab {s_tok.vocab_size} or another "
            f"tokenizer (teacher {t_tok.kind} tokenizer {t_tok.fingerprint} in {teacher.path} vs "
            f"student {s_tok.kind} tokenizer {s_tok.fingerprint} in {data_dir}/lang); "
            "expected identical tokenizers: give a teacher trained on this data dir (or on one "
            "prepared with the same tokenizer), or set data.dir to the teacher's"
        )
    t_shift, s_shift = teacher.model.frame_shift_ms, student.frame_shift_ms
    if t_shift != s_shift:
        raise ConfigError(
            f"teacher frame shift {t_shift} ms (subsampling {teacher.model.subsampling_factor}, "
            f"{teacher.path}) != student frame shift {s_shift} ms (subsampling "
            f"{student.subsampling_factor}); expected equal output frame rates: set "
            f"model.subsampling_factor={teacher.model.subsampling_factor}"
        )


def _expected_fingerprint(
    teacher,
    student: nn.Module,
    k: int,
    temperature: float,
    hidden_layers: Sequence[int] = (),
    hidden_compress: str = "none",
) -> dict:
    if isinstance(teacher, HFLoaded):
        conversion = plan_conversion(teacher.model.frame_shift_ms, student.frame_shift_ms)
        return hf_fingerprint(
            teacher, conversion, k, temperature,
            hidden_layers=hidden_layers, hidden_compress=hidden_compress,
        )  # fmt: skip
    return teacher_fingerprint(
        file_sha256(teacher.path),
        teacher.tokenizer.fingerprint,
        teacher.model.frame_shift_ms,
        k,
        temperature,
        hidden_layers,
        hidden_compress,
    )


def _cached_targets(
    cfg: DictConfig,
    teacher,
    student: nn.Module,
    temperature: float,
    k: int | None,
    hidden_layers: Sequence[int] = (),
) -> CachedTargets:
    if cfg.targets_dir is None:
        raise ConfigError(
            "distill.source=cached needs targets_dir=<out_dir of asr-kd-dump-targets>"
        )
    if cfg.data.get("speed_perturb", False):
        raise ConfigError(
            "distill.source=cached needs data.speed_perturb=false: the soft targets were "
            "dumped from unperturbed features, and a speed-perturbed cut has other frames "
            "(and another cut id); use distill.source=online to distil with speed perturbation"
        )
    store = SoftTargetStore(cfg.targets_dir)
    # any stored k serves a distill.k <= it (checked below); the stored layers and codec too:
    # the request is checked against them below
    expected = _expected_fingerprint(
        teacher, student, store.k, temperature, store.hidden_layers, store.hidden_compress
    )
    differs = {
        key
        for key in {*store.fingerprint, *expected}
        if store.fingerprint.get(key) != expected.get(key)
    }
    if differs == {"temperature"}:  # the same teacher's targets: a setting, not another teacher
        raise ConfigError(
            f"distill.temperature={temperature} but the soft targets in {cfg.targets_dir} were "
            f"dumped at temperature {store.temperature}; set distill.temperature="
            f"{store.temperature} or dump again with temperature={temperature}"
        )
    store.check_fingerprint(expected)
    if k is not None and k > store.k:
        raise ConfigError(
            f"distill.k={k} > k={store.k} stored in {Path(cfg.targets_dir) / 'index.json'}; "
            "expected distill.k <= the dump's k (or null)"
        )
    missing = sorted(set(hidden_layers) - set(store.hidden_layers))
    if missing:
        wanted = sorted(set(hidden_layers))
        raise ConfigError(
            f"hidden-state distillation needs teacher layers {wanted} but the targets in "
            f"{cfg.targets_dir} hold {list(store.hidden_layers) or 'no hidden layers'} (missing "
            f"{missing}); dump them with asr-kd-dump-targets ... hidden_layers=[{','.join(map(str, wanted))}] "
            "into a new out_dir, or set distill.teacher_layers to stored layers"
        )
    return CachedTargets(store, k, hidden_layers)


def build_teacher_targets(
    cfg: DictConfig, student: nn.Module, tokenizer, kd: KDConfig
) -> TeacherTargets | None:
    """The teacher-targets callable for ``kd.source`` (``kd.k`` ids per frame) after the
    compatibility checks; None for CTC alone."""
    source, k = kd.source, kd.k
    if source not in SOURCES:
        raise ConfigError(f"distill.source={source!r}, expected one of {SOURCES}")
    if source == "none" or not kd.uses_teacher:
        return None
    if cfg.teacher_ckpt is None:
        raise ConfigError(f"distill.source={source} needs teacher_ckpt=<teacher checkpoint>")
    teacher = load_teacher(cfg.teacher_ckpt)
    check_compatible(teacher, student, tokenizer, str(cfg.data.dir))
    pairs = hidden_pairs(kd, student, teacher.model) if kd.hidden_weight else ()
    teacher_layers = [t for _, t in pairs]
    if source == "cached":
        targets = _cached_targets(cfg, teacher, student, kd.temperature, k, teacher_layers)
    elif isinstance(teacher, HFLoaded):
        targets = HFTeacher(
            teacher,
            student.subsampling_factor,
            student.frame_shift_ms,
            kd.temperature,
            k,
            layers=tuple(teacher_layers),
        )
    else:
        targets = OnlineTeacher(teacher.model, kd.temperature, k, teacher_layers)
    targets.hidden_pairs = pairs
    return targets


def hidden_pairs(
    kd: KDConfig, student: nn.Module, teacher: nn.Module
) -> tuple[tuple[int, int], ...]:
    """The (student layer, teacher layer) pairs of ``kd.student_layers`` / ``kd.teacher_layers``
    (None: the default of :func:`asr_kd.distill.hidden.layer_map`).

    ``teacher``: a Conformer (``.layers``) or a transformers model (``HFCTCModel.num_layers``)."""
    student_layers, teacher_layers = kd.student_layers, kd.teacher_layers
    num_teacher = len(teacher.layers) if hasattr(teacher, "layers") else teacher.num_layers
    return layer_map(
        len(student.layers),
        int(num_teacher),
        None if student_layers is None else list(student_layers),
        None if teacher_layers is None else list(teacher_layers),
    )


def load_teacher(source: str) -> LoadedModel | HFLoaded:
    """An asr_kd checkpoint or ``hf:<dir|hub id>[@revision]`` (:func:`load_model`, on cpu)."""
    return load_model(source)
