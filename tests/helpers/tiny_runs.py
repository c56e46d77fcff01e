"""Overrides for few-step runs of a ~25 k-parameter Conformer (seconds on 2 CPU cores), and
tiny random models ready to decode real audio.

Usage: ``from tests.helpers.tiny_runs import tiny_run``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from asr_kd.config import compose
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.models.loading import LoadedModel

TINY_RUN = [
    "model.d_model=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.ff_dim=64",
    "model.subsampling_channels=8",
    "data.num_workers=0",
    "data.num_buckets=2",  # the tiny dev subset has 4 cuts
    "data.max_duration=10",  # several batches per epoch
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "trainer.limit_val_batches=1",
]


def tiny_run(config: str, data_dir, out_dir, *overrides: str, steps: int = 3):
    """``compose(config)`` for a ``steps``-step run (dev WER and last.ckpt at the end)."""
    return compose(
        config,
        [
            f"data.dir={data_dir}",
            f"out_dir={out_dir}",
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}",
            f"checkpoint.every_n_steps={steps}",
            *TINY_RUN,
            *overrides,
        ],
    )


def evaluate_overrides(data_dir, out_dir, teacher, student, runtime) -> list[str]:
    """asr-kd-evaluate overrides for a teacher and a streaming student on the tiny test subset
    (160 ms chunks, no warm-up, no plots) in ``runtime``."""
    return [
        f"data.dir={data_dir}",
        f"out_dir={out_dir}",
        "subsets=[test]",
        "chunk_sizes_ms=[160]",
        "rtf.warmup_utts=0",
        "plots=false",
        f"ckpt.teacher={teacher}",
        f"ckpt.student_kd={student}",
        f"runtime={runtime}",
    ]


def kd_student_run(data_dir, out_dir, teacher_ckpt, targets_dir, *overrides: str, steps: int = 3):
    """:func:`tiny_run` of ``asr-kd-distill`` for a student_tiny-based student from cached targets."""
    return tiny_run(
        "distill", data_dir, out_dir, f"teacher_ckpt={teacher_ckpt}",
        f"targets_dir={targets_dir}", "model=student_tiny", *overrides, steps=steps,
    )  # fmt: skip


def toy_batch(generator) -> dict:
    """A two-cut training batch (48 and 33 fbank frames, random features from ``generator``)."""
    import torch

    return {
        "feats": torch.randn(2, 48, 80, generator=generator),
        "feat_lens": torch.tensor([48, 33]),
        "tokens": torch.tensor([[1, 2, 3], [4, 5, 0]]),
        "token_lens": torch.tensor([3, 2]),
        "cut_ids": ["cut-a", "cut-b"],
        "texts": ["A B C", "D E"],
    }


def tiny_char_model(tiny, data_dir, role: str, streaming: bool, **kwargs) -> LoadedModel:
    """``tiny(streaming, vocab_size=29, **kwargs)`` (the ``tiny`` fixture) with ``data_dir``'s
    CMVN, so that the fbank of real audio lands where it expects it; char vocabulary."""
    cmvn = json.loads((Path(data_dir) / "cmvn.json").read_text())
    model = tiny(streaming, vocab_size=29, **kwargs)
    model.set_cmvn(torch.tensor(cmvn["mean"]), torch.tensor(cmvn["std"]))
    return LoadedModel(model, Tokenizer.char(), {}, role, Path(f"<tiny {role}>"))
