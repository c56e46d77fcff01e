"""The LightningModule shared by ``asr-kd-train`` (CTC) and ``asr-kd-distill`` (CTC + KD).

One task, one ``training_step``: features in, loss out. What differs between the teacher run
and a distillation run is a *teacher targets* object, a plain callable
``targets(batch) -> TeacherOutput(ids (B, T_t, k), probs (B, T_t, k), lens (B,), hidden)``
(:class:`asr_kd.distill.teachers.TeacherOutput`):

- :class:`asr_kd.distill.teachers.OnlineTeacher` runs a frozen teacher (eval mode, no grad) on
  the clean features;
- :class:`asr_kd.distill.teachers.CachedTargets` reads the same numbers from an
  ``asr-kd-dump-targets`` store by cut id;
- ``None`` trains with CTC alone.

The training-only KD terms (:class:`asr_kd.distill.kd_term.KDTerm`: hidden-state projections,
Inter-CTC heads, built by :func:`asr_kd.distill.terms.build_kd_terms`) live in
``task.kd_modules``, an ``nn.ModuleDict`` by term name beside ``model``, not inside it: they are
optimised with the model and saved in Lightning checkpoints (a resume restores them), and left
out by ``load_model`` and every export, which read ``model.`` keys only. The training step adds
each term to the loss in turn.

The teacher is deliberately *not* a submodule: it is not saved in the student's checkpoint, not
wrapped by DDP and not switched to train mode by Lightning.

Usage:
    kd = KDConfig(alpha=0.5, temperature=2.0)
    task = AsrTask(model, model_config, tokenizer, role="student", optim=OptimConfig(), kd=kd,
                   targets=CachedTargets(store), kd_modules=build_kd_terms(kd, model, TeacherSetup(targets)))
    lightning.Trainer(max_steps=100).fit(task, datamodule=dm)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn

from asr_kd.distill.kd_term import KDStep, KDTerm
from asr_kd.distill.losses import DistillLoss, KDConfig, distill_loss
from asr_kd.distill.output import check_frame_counts
from asr_kd.distill.teachers import TeacherOutput, TeacherTargets
from asr_kd.errors import ConfigError
from asr_kd.metrics import char_error_rate, word_error_rate
from asr_kd.models.decode import greedy_ctc
from asr_kd.training.bad_batches import BadBatches

__all__ = ["AsrTask", "OptimConfig", "lr_lambda"]


@dataclass
class OptimConfig:
    """AdamW with a warmup + Noam or cosine learning-rate schedule (stepped every optimizer step)."""

    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)  # 0.98: the Transformer/Conformer recipe value
    eps: float = 1e-8
    schedule: str = "noam"  # noam | cosine | constant
    warmup_steps: int = 500
    total_steps: int = -1  # cosine only: decay ends here (usually trainer.max_steps)
    min_lr_ratio: float = 0.01  # cosine only: final lr / peak lr


def lr_lambda(
    schedule: str, warmup_steps: int, total_steps: int = -1, min_lr_ratio: float = 0.0
) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based).

    >>> f = lr_lambda("noam", warmup_steps=4)
    >>> [round(f(s), 3) for s in (0, 3, 15)]   # linear warmup, then 1/sqrt(step) decay
    [0.25, 1.0, 0.5]
    >>> g = lr_lambda("cosine", warmup_steps=2, total_steps=12, min_lr_ratio=0.0)
    >>> [round(g(s), 3) for s in (0, 1, 6, 12)]
    [0.5, 1.0, 0.5, 0.0]
    """
    if schedule not in ("noam", "cosine", "constant"):
        raise ConfigError(f"optim.schedule={schedule!r}, expected noam, cosine or constant")
    if schedule == "cosine" and total_steps <= warmup_steps:
        raise ConfigError(
            f"optim.schedule=cosine needs optim.total_steps ({total_steps}, -1 = "
            f"trainer.max_steps) > optim.warmup_steps ({warmup_steps}); lower "
            f"optim.warmup_steps below {total_steps} or raise trainer.max_steps above "
            f"{warmup_steps}"
        )
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        step += 1
        if step <= warmup or schedule == "constant":
            return min(1.0, step / warmup)
        if schedule == "noam":  # Vaswani et al. 2017: lr ~ 1/sqrt(step) after warmup
            return math.sqrt(warmup / step)
        progress = min(1.0, (step - warmup) / (total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class AsrTask(L.LightningModule):
    """Trains ``model`` with CTC, plus KD from ``targets`` when given.

    Args:
        model: a ``ConformerCTC`` (CMVN and vocab already set), or a model that reads audio
            (``model.reads_audio``: a trainable :class:`asr_kd.models.hf.HFCTCModel`), fed the
            batch's ``audio``/``audio_lens``, CTC only, ``spec_augment`` on its own features.
        model_config: plain dict with ``_target_`` that rebuilds ``model`` (saved in checkpoints).
        tokenizer: the data's ``Tokenizer`` (``to_dict()`` saved in checkpoints).
        role: "teacher" or "student".
        kd: loss knobs; None = CTC only. targets: teacher targets callable or None.
        spec_augment: module ``(feats, feat_lens) -> feats`` for training only, or None.
        max_consecutive_bad_batches: this many non-finite losses in a row stop training.
        bad_batches_read_every: steps between host reads of the bad-batch counts, which
            otherwise stay on the device (:mod:`asr_kd.training.bad_batches`).
        val_chunk_size: chunk size (encoder frames) for the dev WER of a streaming model;
            None = full context.
        val_subsets: the dev subsets' names, in dataloader order. With one (or none given),
            ``val/wer``, ``val/cer`` and ``val/loss`` are that subset's; with several, each
            subset's figures are ``val/<subset>/wer`` (``cer``, ``loss``) and ``val/wer`` and
            ``val/cer`` are the combined ones (errors over reference words of all the subsets
            together), which ``best.ckpt`` follows.
        kd_modules: the training-only KD terms by name
            (:func:`asr_kd.distill.terms.build_kd_terms`), added to the loss in this order;
            None = none.
    """

    def __init__(
        self,
        model: nn.Module,
        model_config: dict,
        tokenizer,
        role: str,
        optim: OptimConfig,
        kd: KDConfig | None = None,
        targets: TeacherTargets | None = None,
        spec_augment: nn.Module | None = None,
        max_consecutive_bad_batches: int = 20,
        val_chunk_size: int | None = None,
        kd_modules: dict[str, KDTerm] | None = None,
        val_subsets: Sequence[str] = ("dev",),
        bad_batches_read_every: int = 50,
    ):
        super().__init__()
        self.model, self.spec_augment = model, spec_augment
        self.kd_modules = nn.ModuleDict(kd_modules or {})
        self.model_config, self.tokenizer, self.role = model_config, tokenizer, role
        self.optim, self.kd = optim, kd if kd is not None else KDConfig()
        self.targets = targets
        self.val_chunk_size = val_chunk_size
        self._bad = BadBatches(max_consecutive_bad_batches, bad_batches_read_every)
        self._frames_differ: torch.Tensor | None = None  # teacher vs student, on the device
        # prog_bar values only with a progress bar: Lightning reads them on the host every step
        self._show_progress = True  # set by on_train_start
        self.averaged_steps: list[int] | None = None  # set while averaged.ckpt is written
        self.val_subsets = tuple(val_subsets) or ("dev",)
        # per dev subset: word errors, words, char errors, chars
        self._val_counts = torch.zeros(len(self.val_subsets), 4, dtype=torch.float64)
        # self.kd_modules (above) is training only: never under self.model
        self.reads_audio = bool(getattr(model, "reads_audio", False))  # batch["audio"] in
        if self.reads_audio and (targets is not None or kd_modules or self.kd.inter_weight > 0):
            raise ConfigError(
                "a transformers model (model=hf_*) trains with CTC alone here (asr-kd-train); "
                "distil into our Conformer students instead (teacher_ckpt=hf:<dir>)"
            )

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        teacher = self._teacher(batch)  # on the clean features
        log_probs, out_lens, *hidden = self._train_forward(batch)
        losses = self.compute_loss(log_probs, out_lens, batch, teacher)  # CTC + frame KD
        figures = {"train/ctc": losses.ctc, "train/kd": losses.kd}
        step = KDStep(batch, out_lens, hidden[0] if hidden else None, teacher)
        loss = losses.loss
        for name, term in self.kd_modules.items():  # the training-only KD terms, in order
            loss, figures[f"train/{name}"] = term.add_to(loss, step)
        self.log_dict(
            {"train/loss": loss, **figures}, prog_bar=self._show_progress,
            batch_size=log_probs.size(0),
        )  # fmt: skip
        return self._bad.loss(loss, losses.ctc, losses.kd)  # 0 when non-finite: no host read

    def _teacher(self, batch: dict) -> TeacherOutput | None:
        """The teacher's targets of ``batch`` (None without a teacher)."""
        if self.targets is None:
            return None
        return TeacherOutput(*self.targets(batch))  # a 3-tuple works too

    def _train_forward(self, batch: dict) -> tuple:
        """The model on a training batch (SpecAugment, a sampled chunk size): ``(log_probs,
        out_lens)``, plus every layer's output when ``kd_modules`` need them."""
        if self.reads_audio:  # a transformers model: its own features, SpecAugment on them
            return self.model(batch["audio"], batch["audio_lens"], augment=self.spec_augment)[:2]
        feats, feat_lens = batch["feats"], batch["feat_lens"]
        if self.spec_augment is not None:
            feats = self.spec_augment(feats, feat_lens)
        chunk_size = self.model.sample_chunk_size()  # dynamic chunk training; None = full
        return self.model(
            feats, feat_lens, chunk_size=chunk_size, left_chunks=self.model.default_left_chunks,
            return_hidden=len(self.kd_modules) > 0,
        )  # fmt: skip

    def compute_loss(self, log_probs, out_lens, batch: dict, teacher) -> DistillLoss:
        """The final layer's loss of one batch (CTC, plus frame KD when ``teacher``, the
        batch's :class:`TeacherOutput`, is given); the KD terms come on top of it."""
        if teacher is None:
            return distill_loss(log_probs, out_lens, batch["tokens"], batch["token_lens"])
        ids, probs, teacher_lens, _hidden = teacher
        self._check_frames(teacher_lens, out_lens, batch["cut_ids"])
        return distill_loss(
            log_probs, out_lens, batch["tokens"], batch["token_lens"], ids, probs,
            teacher_lens=teacher_lens, **self.kd.loss_options(),
        )  # fmt: skip

    def _check_frames(self, teacher_lens, out_lens, cut_ids) -> None:
        """Teacher and student frame counts must be equal. On the CPU a host read is free: raise
        now, naming the cut. On an accelerator a read would stall the step, so a device flag
        notes it and :meth:`on_train_batch_end` raises at its next read (cached targets are
        also checked per cut when their batch is built, in the loader's workers)."""
        teacher_lens = teacher_lens.to(out_lens.device)
        if out_lens.device.type != "cpu":
            differ = (teacher_lens != out_lens).any()
            prev = self._frames_differ
            self._frames_differ = differ if prev is None else prev | differ
            return
        check_frame_counts(teacher_lens, out_lens, cut_ids)

    def on_before_optimizer_step(self, optimizer) -> None:
        """After backward, before clipping: a bad step's gradients become zero on every rank,
        and the fused AdamW skips it."""
        params = [*self.model.parameters(), *self.kd_modules.parameters()]
        self._bad.before_optimizer_step(params, int(self.global_step), optimizer)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """The device-side checks, read by the host every ``bad_batches_read_every`` steps."""
        self._read_device_checks(force=False)

    def on_train_start(self) -> None:
        self._show_progress = self.trainer.progress_bar_callback is not None

    def on_train_end(self) -> None:
        self._read_device_checks(force=True)  # a run may end between two reads

    def _read_device_checks(self, force: bool) -> None:
        step = int(self.global_step)
        if self._frames_differ is not None and (force or step % self._bad.read_every == 0):
            if bool(self._frames_differ):
                raise ValueError(
                    f"the teacher's frame counts differ from the student's in a batch of the "
                    f"{self._bad.read_every} steps up to step {step} (expected equal: same "
                    "features and frame rate)"
                )
        total = self._bad.check(step, force=force)
        if total and not force:  # on_train_end may not log
            self.log("train/bad_batches", float(total), reduce_fx="max")

    @property
    def bad_batches(self) -> int:
        """Training steps with a non-finite loss, agreed across ranks (a host read)."""
        return self._bad.total

    # ---------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.reads_audio:
            log_probs, out_lens, _ = self.model(batch["audio"], batch["audio_lens"])
        else:
            log_probs, out_lens = self.model(
                batch["feats"],
                batch["feat_lens"],
                chunk_size=self.val_chunk_size if self.model.streaming else None,
                left_chunks=self.model.default_left_chunks,
            )
        losses = self.compute_loss(log_probs, out_lens, batch, None)
        self.log(
            self._val_key("loss", dataloader_idx), losses.loss, batch_size=log_probs.size(0),
            sync_dist=True, add_dataloader_idx=False,
        )  # fmt: skip
        hyps = [self.tokenizer.decode(ids) for ids in greedy_ctc(log_probs, out_lens)]
        pairs = [(r, h) for r, h in zip(batch["texts"], hyps, strict=True) if r.strip()]
        if not pairs:
            return
        refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
        words, chars = word_error_rate(refs, hyps), char_error_rate(refs, hyps)
        for i, stats in enumerate((words, chars)):
            errors = stats["num_sub"] + stats["num_del"] + stats["num_ins"]
            self._val_counts[dataloader_idx, 2 * i] += errors
            self._val_counts[dataloader_idx, 2 * i + 1] += stats[
                "ref_words" if i == 0 else "ref_chars"
            ]

    def _val_key(self, metric: str, dataloader_idx: int) -> str:
        """``val/<metric>`` with one dev subset, else ``val/<subset>/<metric>``."""
        if len(self.val_subsets) == 1:
            return f"val/{metric}"
        return f"val/{self.val_subsets[dataloader_idx]}/{metric}"

    def on_validation_epoch_end(self) -> None:
        counts = self.trainer.strategy.reduce(
            self._val_counts.to(self.device, torch.float32), reduce_op="sum"
        )  # (S, 4)
        self._val_counts.zero_()
        if len(self.val_subsets) > 1:
            for i in range(len(self.val_subsets)):
                if counts[i, 1] > 0:
                    self.log(self._val_key("wer", i), 100.0 * counts[i, 0] / counts[i, 1])
                    self.log(self._val_key("cer", i), 100.0 * counts[i, 2] / counts[i, 3])
            counts = counts.sum(0, keepdim=True)  # the subsets together
        if counts[0, 1] > 0:
            self.log("val/wer", 100.0 * counts[0, 0] / counts[0, 1], prog_bar=True)
            self.log("val/cer", 100.0 * counts[0, 2] / counts[0, 3])

    # ------------------------------------------------------------ optimizer, ckpt
    def configure_optimizers(self):
        opt = self.optim
        optimizer = torch.optim.AdamW(
            [*self.model.parameters(), *self.kd_modules.parameters()],  # kd_modules: training only
            lr=opt.lr,
            betas=tuple(opt.betas),
            eps=opt.eps,
            weight_decay=opt.weight_decay,
            # one kernel per step instead of a loop of elementwise ops per tensor: ~4 % of a
            # teacher_small update on CPU; CUDA has the same fused path. Not under mixed
            # precision with clipping (trainer=gpu): Lightning refuses to clip the gradients of
            # an optimizer that unscales them itself, as fused AdamW does, bf16 included
            fused=not self._amp_clipping(),
        )
        factor = lr_lambda(opt.schedule, opt.warmup_steps, opt.total_steps, opt.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _amp_clipping(self) -> bool:
        """Whether the trainer clips gradients under ``16-mixed`` or ``bf16-mixed``."""
        trainer = self._trainer
        if trainer is None:
            return False
        mixed = str(trainer.precision).endswith("-mixed")
        return mixed and bool(trainer.gradient_clip_val)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["asr_kd"] = {
            "model_config": self.model_config,
            "tokenizer": self.tokenizer.to_dict(),
            "role": self.role,
            "bad_batches": self._bad.total,
        }
        if self.averaged_steps is not None:  # the steps whose weights this checkpoint averages
            checkpoint["asr_kd"]["averaged_steps"] = list(self.averaged_steps)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._bad.base = int(checkpoint.get("asr_kd", {}).get("bad_batches", 0))
