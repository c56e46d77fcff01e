"""``asr-kd-distill``: train a student from a teacher's soft posteriors (cached or online).

The same build steps as ``asr-kd-train`` (it reuses :mod:`asr_kd.train`), plus a teacher-targets
source chosen by ``distill.source``:

- ``cached``: soft targets written by ``asr-kd-dump-targets`` (``targets_dir=``), matched to
  each batch by cut id. No teacher forward pass: the cheap way to run many students.
- ``online``: the teacher (``teacher_ckpt=``, frozen, eval mode) runs on the clean features of
  every batch, while the student sees its own SpecAugment.
- ``none`` (``distill=none``): plain CTC, the baseline.

Before step one the teacher and the student must agree: same tokenizer (fingerprint), same
output frame rate, and the cached targets must carry the configured teacher's fingerprint
(checkpoint hash, tokenizer, frame shift, k, temperature). Each mismatch is an error naming both
values.

Usage:
    asr-kd-distill model=student_tiny teacher_ckpt=exp/teacher/checkpoints/last.ckpt \\
        distill=frame_kl distill.source=cached targets_dir=exp/targets data.dir=DATA \\
        out_dir=exp/student
    asr-kd-distill ... distill.source=online distill.k=8
    asr-kd-distill ... distill=shift distill.shift=3 distill.alpha=0.7
    asr-kd-distill model=student_tiny distill=none data.dir=DATA out_dir=exp/student_ctc
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch import nn

from asr_kd.checkpoint import LoadedModel, file_sha256, load_model
from asr_kd.config import CONF_DIR
from asr_kd.distill.soft_targets import SoftTargetStore, teacher_fingerprint
from asr_kd.task import CachedTargets, KDConfig, OnlineTeacher, TeacherTargets
from asr_kd.train import build_datamodule, build_model, fit

__all__ = ["build_teacher_targets", "check_compatible", "distill", "main"]

SOURCES = ("none", "cached", "online")


def check_compatible(
    teacher: LoadedModel, student: nn.Module, student_tokenizer, data_dir: str
) -> None:
    """Raise ``ValueError`` unless teacher and student share the tokenizer and the frame rate."""
    t_tok, s_tok = teacher.tokenizer, student_tokenizer
    if t_tok.fingerprint != s_tok.fingerprint:
        raise ValueError(
            f"teacher vocab {t_tok.vocab_size} != student vocab {s_tok.vocab_size} or another "
            f"tokenizer (teacher {t_tok.kind} tokenizer {t_tok.fingerprint} in {teacher.path} vs "
            f"student {s_tok.kind} tokenizer {s_tok.fingerprint} in {data_dir}/lang); "
            "expected identical tokenizers"
        )
    t_shift, s_shift = teacher.model.frame_shift_ms, student.frame_shift_ms
    if t_shift != s_shift:
        raise ValueError(
            f"teacher frame shift {t_shift} ms (subsampling {teacher.model.subsampling_factor}, "
            f"{teacher.path}) != student frame shift {s_shift} ms (subsampling "
            f"{student.subsampling_factor}); expected equal output frame rates"
        )


def _cached_targets(cfg: DictConfig, teacher: LoadedModel, kd: KDConfig) -> CachedTargets:
    if cfg.targets_dir is None:
        raise ValueError("distill.source=cached needs targets_dir=<out_dir of asr-kd-dump-targets>")
    if cfg.data.get("speed_perturb", False):
        raise ValueError(
            "distill.source=cached needs data.speed_perturb=false: the soft targets were "
            "dumped from unperturbed features, and a speed-perturbed cut has other frames "
            "(and another cut id); use distill.source=online to distil with speed perturbation"
        )
    store = SoftTargetStore(cfg.targets_dir)
    expected = teacher_fingerprint(
        file_sha256(teacher.path),
        teacher.tokenizer.fingerprint,
        teacher.model.frame_shift_ms,
        store.k,  # any stored k serves a distill.k <= it (checked below)
        kd.temperature,
    )
    store.check_fingerprint(expected)
    if kd.k is not None and kd.k > store.k:
        raise ValueError(
            f"distill.k={kd.k} > k={store.k} stored in {Path(cfg.targets_dir) / 'index.json'}; "
            "expected distill.k <= the dump's k (or null)"
        )
    return CachedTargets(store, kd.k)


def build_teacher_targets(
    cfg: DictConfig, student: nn.Module, tokenizer, kd: KDConfig
) -> TeacherTargets | None:
    """The teacher-targets callable for ``cfg.distill.source`` after the compatibility checks."""
    source = cfg.distill.source
    if source not in SOURCES:
        raise ValueError(f"distill.source={source!r}, expected one of {SOURCES}")
    if source == "none" or kd.alpha == 0.0:
        return None
    if cfg.teacher_ckpt is None:
        raise ValueError(f"distill.source={source} needs teacher_ckpt=<teacher checkpoint>")
    teacher = load_model(cfg.teacher_ckpt)
    check_compatible(teacher, student, tokenizer, str(cfg.data.dir))
    if source == "cached":
        return _cached_targets(cfg, teacher, kd)
    return OnlineTeacher(teacher.model, kd.temperature, kd.k)


def distill(cfg: DictConfig) -> dict:
    """Distil ``cfg.model`` from the teacher per ``cfg.distill``; return the run's figures."""
    L.seed_everything(int(cfg.seed), workers=True)
    dm = build_datamodule(cfg.data)
    model, model_config = build_model(cfg.model, dm)
    options = OmegaConf.to_container(cfg.distill, resolve=True)
    options.pop("source")
    kd = KDConfig(**options)
    targets = build_teacher_targets(cfg, model, dm.tokenizer, kd)
    return fit(cfg, dm, model, model_config, role=str(cfg.role), kd=kd, targets=targets)


run = distill


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="distill")
def main(cfg: DictConfig) -> None:
    """Console script ``asr-kd-distill``."""
    result = distill(cfg)
    print({k: v for k, v in result.items() if k != "metrics"})
