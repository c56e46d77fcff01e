"""The two training runs, as plain functions of a composed config (the commands call these).

- :func:`train`: a Conformer CTC model with CTC alone: the teacher (``asr-kd-train``).
- :func:`distill`: a student with CTC + KD from a teacher's targets (``asr-kd-distill``). With
  ``distill=none`` it is the CTC-only student baseline: the one way to train that baseline, since
  it shares every setting (model, optimiser, schedule, updates, data) with the KD student's run
  and differs only in the teacher. ``distill.pseudo_labels=<store>`` adds the teacher's
  transcripts of untranscribed cuts as CTC targets (:mod:`asr_kd.distill.pseudo`).

Usage:
    figures = train(compose("train", ["model=teacher_small", "data.dir=DATA"]))
    figures = distill(compose("distill", ["teacher_ckpt=...", "targets_dir=...", ...]))
"""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf

from asr_kd.data.datamodule import build_datamodule
from asr_kd.distill.losses import KDConfig
from asr_kd.distill.pseudo import build_pseudo_labels
from asr_kd.distill.teachers import TeacherPlacement, build_teacher_targets
from asr_kd.distill.terms import build_kd_terms
from asr_kd.training.builders import build_model, fit
from asr_kd.training.launch import check_launch, is_global_zero, precision_dtype, rank_device

__all__ = ["distill", "train"]


def train(cfg: DictConfig) -> dict:
    """Train ``cfg.model`` with CTC on ``cfg.data``; return :func:`fit`'s figures."""
    check_launch(cfg.trainer)  # a node count the launcher did not start hangs: refused first
    # verbose=False: no "Seed set to" line on stderr, where a refused run prints one error line
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build_datamodule(cfg.data)
    model, model_config = build_model(cfg.model, dm)
    return fit(cfg, dm, model, model_config, role=str(cfg.role))


def distill(cfg: DictConfig) -> dict:
    """Distil ``cfg.model`` from the teacher per ``cfg.distill``; return the run's figures."""
    check_launch(cfg.trainer)
    kd = KDConfig.from_options(OmegaConf.to_container(cfg.distill, resolve=True))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build_datamodule(cfg.data)
    model, model_config = build_model(cfg.model, dm)
    placement = TeacherPlacement(
        rank_device(cfg.trainer), precision_dtype(cfg.trainer.get("precision")), is_global_zero()
    )
    setup = build_teacher_targets(cfg, model, dm.tokenizer, kd, placement)
    targets = setup.targets
    if targets is not None and targets.needs_audio:  # a transformers teacher (hf:...)
        dm.with_audio = True
    # cached targets are looked up in the loader's workers, beside the step (None: online)
    dm.train_batch_fields = getattr(targets, "batch_fields", None)
    pseudo = build_pseudo_labels(cfg, kd, dm, kd_term=targets is not None)
    terms = build_kd_terms(kd, model, setup)  # training only: never in the student's ckpt
    figures = fit(
        cfg, dm, model, model_config, role=str(cfg.role), kd=kd, targets=targets,
        kd_modules=terms,
    )  # fmt: skip
    return figures if pseudo is None else {**figures, "pseudo_labels": pseudo}
