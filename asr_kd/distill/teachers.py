"""Where a student's teacher targets come from: an online teacher, or a dumped target store.

A *teacher targets* object is a plain callable ``targets(batch) -> TeacherOutput(ids (B, T_t,
k), probs (B, T_t, k), lens (B,), hidden)`` that the training task calls on the clean batch
(``hidden``: the teacher's chosen layer outputs for hidden-state distillation, or None; a plain
3-tuple ``(ids, probs, lens)`` is accepted too), with ``needs_audio`` (its batches must carry
audio) and ``hidden_dims`` (the width of each teacher layer in ``hidden``):

- online: the teacher's own targets (:meth:`asr_kd.distill.teacher.Teacher.targets`: a frozen
  teacher, eval mode, no grad, on the clean batch);
- :class:`CachedTargets` reads the same numbers from an ``asr-kd-dump-targets`` store by cut id,
  in the data loader's worker processes: its ``batch_fields(batch) -> dict`` (a callable that a
  targets object may have) is the data module's ``train_batch_fields``.

The teacher is deliberately *not* a submodule of the task: it is not saved in the student's
checkpoint, not wrapped by DDP and not switched to train mode by Lightning.

Before step one the teacher and the student must agree (:func:`check_compatible`): same
tokenizer (fingerprint), an output frame rate the teacher converts (its own: the same), and
cached targets must carry the configured
teacher's fingerprint (checkpoint hash, tokenizer, frame shift, k, temperature). Each mismatch is
an error naming both values.

Usage:
    targets, pairs = build_teacher_targets(cfg, student, tokenizer, KDConfig(alpha=0.5))
    ids, probs, lens, hidden = targets(batch)
    pairs                       # ((student layer, teacher layer), ...) of hidden-state KD, or ()
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import DictConfig
from torch import nn

from asr_kd.checkpoint import atomic_write
from asr_kd.distill.hidden import layer_map
from asr_kd.distill.losses import KDConfig
from asr_kd.distill.output import TeacherOutput, TeacherTargets, check_frame_counts
from asr_kd.distill.store import SoftTargetStore
from asr_kd.distill.teacher import OnlineTeacher, Teacher, open_teacher
from asr_kd.errors import ConfigError

__all__ = [
    "SOFT_TARGETS_KEY",
    "SOURCES",
    "CachedTargets",
    "OnlineTeacher",
    "TEACHER_RECORD",
    "TeacherOutput",
    "TeacherPlacement",
    "TeacherSetup",
    "TeacherTargets",
    "build_teacher_targets",
    "check_compatible",
    "hidden_pairs",
]


# With several ranks, lhotse fills the last round of an epoch that has fewer cuts than ranks with
# copies renamed "<id>_dup<n>" (lhotse.dataset.sampling.base.mark_as_duplicate): same features,
# so the same soft targets as the original.
_LHOTSE_DUPLICATE = re.compile(r"(_dup\d+)+$")

# The batch entry that holds the targets a loader worker looked up (CachedTargets.batch_fields).
SOFT_TARGETS_KEY = "soft_targets"


class CachedTargets:
    """Soft targets of the batch's cuts from a :class:`SoftTargetStore`, on the batch's device;
    with ``hidden_layers``, also those stored teacher layers (decompressed, float32).

    The lookup runs where the batch is built: :meth:`batch_fields` is the data module's
    ``train_batch_fields`` (``asr-kd-distill`` sets it), run in the loader's worker processes,
    so reading and decompressing the store overlaps the training step; it also checks each
    cut's frame count against the student's there, once per cut, with no device involved.
    Called on a batch without those fields (a batch built elsewhere), it looks them up itself.

    Args:
        store: the dumped targets.
        k: top-k ids per frame to keep (None: all stored).
        hidden_layers: stored teacher layers to read (hidden-state KD).
        subsampling_factor: the student's (its output frames are ``feat_lens // factor``);
            None: frame counts are left to the training step's check.
    """

    needs_audio = False

    def __init__(
        self,
        store: SoftTargetStore,
        k: int | None = None,
        hidden_layers: Sequence[int] = (),
        subsampling_factor: int | None = None,
    ):
        self.store, self.k = store, k
        self.hidden_layers = tuple(int(x) for x in hidden_layers)
        self.hidden_dims = tuple(store.hidden_dim(layer) for layer in self.hidden_layers)
        self.subsampling_factor = subsampling_factor

    def lookup(self, cut_ids: Sequence[str]) -> TeacherOutput:
        """The targets of ``cut_ids`` on the CPU: ids, probs (B, T', k), lens (B,), hidden."""
        cut_ids = [c if c in self.store else _LHOTSE_DUPLICATE.sub("", c) for c in cut_ids]
        stored = self.store.decode_batch(cut_ids, self.k, self.hidden_layers)
        return TeacherOutput(stored.ids, stored.probs, stored.lens, stored.hidden or None)

    def batch_fields(self, batch: dict) -> dict:
        """``{"soft_targets": TeacherOutput}`` of a CPU batch (in a loader worker); a
        ``ValueError`` naming the first cut whose stored frames are not the student's."""
        targets = self.lookup(batch["cut_ids"])
        if self.subsampling_factor is not None:
            student = torch.div(batch["feat_lens"], self.subsampling_factor, rounding_mode="floor")
            check_frame_counts(targets.lens, student, batch["cut_ids"])
        return {SOFT_TARGETS_KEY: targets}

    def __call__(self, batch: dict) -> TeacherOutput:
        """The batch's targets on its device: those its worker looked up (moved there with the
        batch), else looked up now."""
        targets = batch.get(SOFT_TARGETS_KEY)
        if targets is None:
            targets = self.lookup(batch["cut_ids"])
        device = batch["feats"].device
        ids, probs, lens = (x.to(device) for x in targets[:3])
        hidden = None if targets.hidden is None else tuple(h.to(device) for h in targets.hidden)
        return TeacherOutput(ids, probs, lens, hidden)


SOURCES = ("none", "cached", "online")


def check_compatible(
    teacher: Teacher, student: nn.Module, student_tokenizer, data_dir: str
) -> None:
    """Raise :class:`ConfigError` (a ``ValueError``) unless teacher and student share the
    tokenizer and the teacher's frames convert to the student's (its own rate: equal)."""
    teacher.check_vocab(student_tokenizer, f"{data_dir}/lang")
    teacher.check_frame_rate(student.frame_shift_ms)


def _cached_targets(
    cfg: DictConfig,
    teacher: Teacher,
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
            "(and another cut id); prepare speed-perturbed copies instead (asr-kd-prepare "
            "speed_perturb=[0.9,1.1], then dump their targets), or use distill.source=online"
        )
    store = SoftTargetStore(cfg.targets_dir)
    # any stored k serves a distill.k <= it (checked below); the stored layers and codec too:
    # the request is checked against them below
    expected = teacher.fingerprint(
        store.k, temperature, student.frame_shift_ms, store.hidden_layers, store.hidden_compress
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
    return CachedTargets(store, k, hidden_layers, student.subsampling.factor)


class TeacherPlacement(NamedTuple):
    """Where this training process runs an online teacher, and whether it is the run's rank 0.

    device: the rank's device (the teacher is loaded there, not on the CPU first).
    dtype: the weights' dtype from the trainer's precision (None: float32;
        :func:`asr_kd.training.launch.precision_dtype`).
    primary: rank 0, the one process that opens the teacher for a cached run's checks and
        fingerprint (hashing a foreign teacher's weight files reads gigabytes) and shares the
        outcome with the other ranks through ``<out_dir>/teacher.json``.
    wait_s: how long another rank waits for that file before giving up.
    """

    device: str | torch.device = "cpu"
    dtype: torch.dtype | None = None
    primary: bool = True
    wait_s: float = 1800.0


TEACHER_RECORD = "teacher.json"  # in the run's out_dir: what rank 0 checked, for the other ranks


def _write_record(out_dir: Path, record: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, sort_keys=True).encode()
    atomic_write(out_dir / TEACHER_RECORD, lambda f: f.write(text))


def _await_record(out_dir: Path, matches, wait_s: float) -> dict:
    """Rank 0's ``teacher.json`` once it holds a record that ``matches`` (one left by an earlier
    run of the same out_dir may describe another teacher or store: waited past)."""
    path, deadline = out_dir / TEACHER_RECORD, time.monotonic() + wait_s
    while True:
        try:
            record = json.loads(path.read_text())
            if matches(record):
                return record
        except (OSError, ValueError):  # not written yet
            pass
        if time.monotonic() > deadline:
            raise ConfigError(
                f"rank 0 wrote no {path} for this teacher and store in {wait_s:.0f} s; expected "
                "rank 0 of the same run (same out_dir) to check the teacher and write it: see "
                "rank 0's error"
            )
        time.sleep(0.5)


def _cached_on_other_rank(
    cfg: DictConfig, student: nn.Module, kd: KDConfig, placement: TeacherPlacement
) -> TeacherSetup:
    """A cached run's targets on a rank other than 0: rank 0 opened the teacher, checked it
    against the student and the store, and recorded the outcome; this rank opens only the
    store, whose fingerprint must be the one rank 0 checked."""
    if cfg.targets_dir is None:
        raise ConfigError(
            "distill.source=cached needs targets_dir=<out_dir of asr-kd-dump-targets>"
        )
    store = SoftTargetStore(cfg.targets_dir)
    source = str(cfg.teacher_ckpt)
    record = _await_record(
        Path(cfg.out_dir),
        lambda r: r.get("source") == source and r.get("fingerprint") == store.fingerprint,
        placement.wait_s,
    )
    pairs = tuple(tuple(p) for p in record["hidden_pairs"])
    layers = [t for _, t in pairs]
    targets = CachedTargets(store, kd.k, layers, student.subsampling.factor)
    return TeacherSetup(targets, pairs)


class TeacherSetup(NamedTuple):
    """What :func:`build_teacher_targets` gives the training run."""

    targets: TeacherTargets | None  # None: CTC alone
    hidden_pairs: tuple[tuple[int, int], ...] = ()  # (student, teacher) layers of hidden KD


def build_teacher_targets(
    cfg: DictConfig,
    student: nn.Module,
    tokenizer,
    kd: KDConfig,
    placement: TeacherPlacement | None = None,
) -> TeacherSetup:
    """The teacher-targets callable for ``kd.source`` (``kd.k`` ids per frame) after the
    compatibility checks (None for CTC alone), and the hidden-state KD layer pairs.

    Online, every rank loads the teacher on ``placement.device`` in ``placement.dtype`` (it
    runs there every step). Cached, only rank 0 opens it (on the CPU, for the checks and the
    fingerprint, computed once) and writes ``<out_dir>/teacher.json``; the other ranks wait for
    that record and open the store alone."""
    source, k, placement = kd.source, kd.k, placement or TeacherPlacement()
    if source not in SOURCES:
        raise ConfigError(f"distill.source={source!r}, expected one of {SOURCES}")
    if source == "none" or not kd.uses_teacher:
        return TeacherSetup(None)
    if cfg.teacher_ckpt is None:
        raise ConfigError(f"distill.source={source} needs teacher_ckpt=<teacher checkpoint>")
    if source == "cached" and not placement.primary:
        return _cached_on_other_rank(cfg, student, kd, placement)
    online = source == "online"
    device, dtype = (placement.device, placement.dtype) if online else ("cpu", None)
    teacher = open_teacher(str(cfg.teacher_ckpt), device, dtype=dtype)
    check_compatible(teacher, student, tokenizer, str(cfg.data.dir))
    pairs = hidden_pairs(kd, student, teacher.num_layers) if kd.hidden_weight else ()
    teacher_layers = [t for _, t in pairs]
    if online:
        targets = teacher.targets(kd.temperature, k, teacher_layers, student.frame_shift_ms)
        return TeacherSetup(targets, pairs)
    targets = _cached_targets(cfg, teacher, student, kd.temperature, k, teacher_layers)
    record = {"source": str(cfg.teacher_ckpt), "fingerprint": targets.store.fingerprint}
    _write_record(Path(cfg.out_dir), {**record, "hidden_pairs": [list(p) for p in pairs]})
    return TeacherSetup(targets, pairs)


def hidden_pairs(
    kd: KDConfig, student: nn.Module, num_teacher_layers: int
) -> tuple[tuple[int, int], ...]:
    """The (student layer, teacher layer) pairs of ``kd.student_layers`` / ``kd.teacher_layers``
    (None: the default of :func:`asr_kd.distill.hidden.layer_map`)."""
    student_layers, teacher_layers = kd.student_layers, kd.teacher_layers
    return layer_map(
        len(student.layers),
        int(num_teacher_layers),
        None if student_layers is None else list(student_layers),
        None if teacher_layers is None else list(teacher_layers),
    )
