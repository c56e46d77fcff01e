"""Overrides for few-step runs of a ~25 k-parameter Conformer (seconds on 2 CPU cores).

Imported by tests/training/test_train.py and tests/distill/conftest.py (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

from asr_kd.config import compose

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
        f"checkpoints.teacher={teacher}",
        f"checkpoints.student_kd={student}",
        f"runtime={runtime}",
    ]
