"""Builders of a training run: model, trainer (loggers, checkpoints, atomic IO), and ``fit``.

``asr-kd-train`` and ``asr-kd-distill`` (:mod:`asr_kd.training.run`) are short lists of these
steps: data module -> model (vocab from the tokenizer, CMVN from the training statistics) ->
:class:`asr_kd.training.task.AsrTask` -> Lightning trainer -> :func:`fit`.

Run directory (``out_dir``):

    config.yaml                    the resolved config
    checkpoints/last.ckpt          every ``checkpoint.every_n_steps`` and at the end
    checkpoints/best.ckpt          lowest dev WER (``val/wer``: of all the dev subsets together
                                   when ``data.dev_subset`` lists several), checked every
                                   ``trainer.val_check_interval`` steps
    checkpoints/averaged.ckpt      with ``average.last_n=N``: the mean weights of the last N
                                   snapshots, ``average.every_n_steps`` apart (weights only;
                                   :mod:`asr_kd.training.averaging`)
    logs/csv/version_N/metrics.csv, logs/tensorboard/version_N/   one version per (re)start
    hf_model/, hf_model_averaged/  a transformers model (``model=hf_*``): its final (averaged)
                                   weights and processor by ``save_pretrained``, for ``hf:<dir>``

Checkpoints are written atomically (temp file + rename, :class:`AtomicCheckpointIO`) and hold
only plain types, so the whole file loads with ``torch.load(weights_only=True)``.
``resume=true`` continues from ``checkpoints/last.ckpt`` at its global step with its optimizer,
scheduler and callback states, and mid-epoch at the batch after the last one trained (the data
module saves its sampler's place). ``init_from=CKPT`` is not a resume: a new run whose model
starts from that checkpoint's weights (same model config, same tokenizer), with a fresh
optimizer, schedule and step count (fine-tuning). Every key under ``trainer.`` goes to
``lightning.Trainer`` unchanged.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch import nn

from asr_kd.checkpoint import atomic_torch_save
from asr_kd.config import save_config
from asr_kd.distill.losses import KDConfig
from asr_kd.distill.teachers import TeacherTargets
from asr_kd.errors import ConfigError, MissingFileError, OutputExistsError
from asr_kd.models.hf_build import save_hf_model
from asr_kd.models.loading import init_weights_from
from asr_kd.training.averaging import WeightAverager
from asr_kd.training.task import AsrTask, OptimConfig, lr_lambda

__all__ = [
    "AVERAGED_CKPT",
    "HF_AVERAGED_DIR",
    "HF_DIR",
    "AtomicCheckpointIO",
    "EpochTimer",
    "build_averager",
    "build_model",
    "build_trainer",
    "fit",
]

AVERAGED_CKPT = "averaged.ckpt"  # beside last.ckpt and best.ckpt
HF_DIR, HF_AVERAGED_DIR = "hf_model", "hf_model_averaged"  # model=hf_*: save_pretrained dirs


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a half-written ``.ckpt`` (temp file + rename)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)


class EpochTimer(Callback):
    """Logs ``train/epoch_seconds`` (wall time of each training epoch, validation excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0
        self._val_start = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()  # a resumed run starts mid-epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._start += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        pl_module.log("train/epoch_seconds", self.seconds[-1])


def build_model(model_cfg: DictConfig, dm) -> tuple[nn.Module, dict]:
    """Instantiate ``model_cfg`` with the tokenizer's vocab and the training CMVN; a model that
    reads audio (``model=hf_*``) gets no CMVN, and ``dm`` then carries the audio (``with_audio``).

    Returns:
        (model, model_config): model_config is the plain dict (``_target_``, ``vocab_size`` from
        the tokenizer) saved in every checkpoint to rebuild the model.
    """
    model_config = OmegaConf.to_container(model_cfg, resolve=True)
    model_config["vocab_size"] = dm.tokenizer.vocab_size
    model = hydra.utils.instantiate(model_config)
    if getattr(model, "reads_audio", False):  # a transformers model: its extractor normalises
        dm.with_audio = True
        return model, model_config
    mean, std = dm.cmvn
    model.set_cmvn(mean, std)
    return model, model_config


def build_averager(cfg: DictConfig) -> WeightAverager | None:
    """The ``average.`` options as a :class:`WeightAverager`; None when ``average.last_n=0``.

    Raises:
        ConfigError: a negative count, ``every_n_steps < 1``, or ``last_n * every_n_steps``
            over ``trainer.max_steps`` (checked before the run writes anything).
    """
    options = cfg.get("average") or {}
    last_n = int(options.get("last_n", 0))
    if last_n == 0:
        return None
    return WeightAverager(
        last_n, int(options.get("every_n_steps", 1)), int(cfg.trainer.get("max_steps", -1))
    )


def build_trainer(
    cfg: DictConfig, out_dir: Path, callbacks: list[Callback] | tuple = ()
) -> tuple[L.Trainer, EpochTimer]:
    """``lightning.Trainer(**cfg.trainer)`` with our loggers, checkpoints, atomic IO, and
    ``callbacks`` besides."""
    ckpt_dir = out_dir / "checkpoints"
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        save_top_k=0,
        save_last=True,
        every_n_train_steps=int(cfg.checkpoint.every_n_steps),
        enable_version_counter=False,
    )
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/wer",
        mode="min",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    timer = EpochTimer()
    loggers = [
        CSVLogger(save_dir=out_dir / "logs", name="csv"),
        TensorBoardLogger(save_dir=out_dir / "logs", name="tensorboard", default_hp_metric=False),
    ]
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        default_root_dir=out_dir,
        logger=loggers,
        callbacks=[last, best, timer, *callbacks],
        plugins=[AtomicCheckpointIO()],
    )
    return trainer, timer


def _resume_path(cfg: DictConfig, out_dir: Path) -> Path | None:
    last = out_dir / "checkpoints" / "last.ckpt"
    if cfg.resume and not last.is_file():
        raise MissingFileError(f"resume=true but {last} does not exist (nothing to resume)")
    if not cfg.resume and last.is_file():
        raise OutputExistsError(
            f"{last} exists: pass resume=true to continue that run, or choose another out_dir"
        )
    return last if cfg.resume else None


def _init_from(cfg: DictConfig) -> Path | None:
    """``init_from``'s checkpoint, refused together with ``resume=true``."""
    init_from = cfg.get("init_from")
    if not init_from:
        return None
    if cfg.resume:
        raise ConfigError(
            f"init_from={init_from} with resume=true: a resumed run continues from "
            f"{Path(cfg.out_dir) / 'checkpoints' / 'last.ckpt'}, which already holds its weights; "
            "drop init_from to resume that run, or drop resume=true (and use a new out_dir) to start "
            "a new run from the checkpoint's weights"
        )
    return Path(init_from)


def _build_task(cfg, dm, model, model_config, role, kd, targets, kd_modules) -> AsrTask:
    """The :class:`AsrTask` of ``cfg`` (optimiser, SpecAugment, bad batches, dev chunk)."""
    optim = OptimConfig(**OmegaConf.to_container(cfg.optim, resolve=True))
    if optim.total_steps < 0:
        optim.total_steps = int(cfg.trainer.get("max_steps", -1))
    lr_lambda(optim.schedule, optim.warmup_steps, optim.total_steps)  # refused before any output
    spec_augment = hydra.utils.instantiate(cfg.spec_augment) if cfg.spec_augment else None
    return AsrTask(
        model,
        model_config,
        dm.tokenizer,
        role,
        optim,
        kd=kd,
        targets=targets,
        spec_augment=spec_augment,
        max_consecutive_bad_batches=int(cfg.max_consecutive_bad_batches),
        val_chunk_size=cfg.get("val_chunk_size"),
        kd_modules=kd_modules,
        val_subsets=dm.dev_subsets,
    )


def _save_hf(trainer: L.Trainer, task: AsrTask, out_dir: Path) -> str | None:
    """A transformers model (``model=hf_*``): its ``save_pretrained`` directory ``out_dir``
    (what ``hf:<out_dir>`` loads), by rank 0; None for our own models."""
    if not task.reads_audio:
        return None
    if trainer.is_global_zero:
        save_hf_model(task.model, task.tokenizer, out_dir)
    return str(out_dir)


def _save_averaged(
    trainer: L.Trainer, task: AsrTask, averager, path: Path
) -> tuple[str | None, str | None]:
    """Write ``averaged.ckpt``: ``last.ckpt``'s format with the averaged weights, weights only
    (no optimizer: it is a model to decode or to ``init_from``, not a run to resume); and a
    transformers model's averaged weights as ``<out_dir>/hf_model_averaged``. Returns both
    paths (None: not written)."""
    if averager is None or not averager.complete:
        return None, None
    final = {name: value.clone() for name, value in task.model.state_dict().items()}
    task.model.load_state_dict(averager.averaged_state(task.model))
    task.averaged_steps = list(averager.steps)
    try:
        trainer.save_checkpoint(path, weights_only=True)
        hf = _save_hf(trainer, task, path.parent.parent / HF_AVERAGED_DIR)
    finally:
        task.model.load_state_dict(final)
        task.averaged_steps = None
    return str(path), hf


def fit(
    cfg: DictConfig,
    dm,
    model: nn.Module,
    model_config: dict,
    role: str,
    kd: KDConfig | None = None,
    targets: TeacherTargets | None = None,
    kd_modules: dict[str, nn.Module] | None = None,
) -> dict:
    """Build the task and the trainer, fit (or resume), save ``last.ckpt`` (and
    ``averaged.ckpt`` with ``average.last_n``); return the figures. ``kd_modules``:
    training-only modules (:class:`AsrTask`), saved for resume, never exported.

    ``init_from=CKPT`` first loads that checkpoint's model weights into ``model`` (see
    :func:`asr_kd.models.loading.init_weights_from`); the optimizer, schedule and step count
    start afresh."""
    out_dir = Path(cfg.out_dir)
    init_from = _init_from(cfg)  # before _resume_path: the conflict, not "nothing to resume"
    resume_from = _resume_path(cfg, out_dir)
    averager = build_averager(cfg)
    task = _build_task(cfg, dm, model, model_config, role, kd, targets, kd_modules)
    if init_from is not None:
        init_weights_from(model, dm.tokenizer, init_from, model_config)
    trainer, timer = build_trainer(cfg, out_dir, [averager] if averager else [])
    if trainer.is_global_zero:
        save_config(cfg, out_dir)
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm, ckpt_path=resume_from, weights_only=True)
    fit_seconds = time.perf_counter() - start
    last = out_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(last, weights_only=False)  # full state
    hf_model = _save_hf(trainer, task, out_dir / HF_DIR)
    averaged, hf_averaged = _save_averaged(
        trainer, task, averager, out_dir / "checkpoints" / AVERAGED_CKPT
    )
    best = trainer.checkpoint_callbacks[1]
    metrics = {key: float(v) for key, v in trainer.callback_metrics.items()}
    return {
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "epoch_seconds": timer.seconds,
        "fit_seconds": fit_seconds,
        "bad_batches": task.bad_batches,
        "best_wer": None if best.best_model_score is None else float(best.best_model_score),
        "best_ckpt": best.best_model_path or None,
        "last_ckpt": str(last),
        "averaged_ckpt": averaged,
        "averaged_steps": list(averager.steps) if averaged else None,
        **({"hf_model": hf_model, "hf_model_averaged": hf_averaged} if hf_model else {}),
        "resumed_from": None if resume_from is None else str(resume_from),
        "init_from": None if init_from is None else str(init_from),
        "metrics": metrics,
    }
