"""trainer=gpu / multi_gpu set what a GPU needs outside ``trainer.*`` (loader, batch seconds,
learning rate, checkpoint cadence) in one choice; the CPU trainers leave the CPU settings alone;
the command line still wins."""

from __future__ import annotations

import pytest

from asr_kd.config import compose

# (data.max_duration, data.num_buckets, data.num_workers, data.pin_memory, optim.lr,
#  checkpoint.every_n_steps, trainer.enable_progress_bar)
_KEYS = ("data.max_duration", "data.num_buckets", "data.num_workers", "data.pin_memory",
         "optim.lr", "checkpoint.every_n_steps", "trainer.enable_progress_bar")  # fmt: skip
_CPU = (120.0, 8, 1, False, 1e-3, 200, True)
_GPU = (800.0, 30, 8, True, 2e-3, 4000, False)


def _values(primary: str, *overrides: str) -> tuple:
    from omegaconf import OmegaConf

    cfg = compose(primary, ["data.dir=DATA", *overrides])
    return tuple(OmegaConf.select(cfg, key) for key in _KEYS)


@pytest.mark.parametrize("primary", ["train", "distill"])
@pytest.mark.parametrize(
    ("trainer", "expected"),
    [("cpu", _CPU), ("ddp_cpu", _CPU), ("gpu", _GPU), ("multi_gpu", _GPU[:4] + (4e-3,) + _GPU[5:])],
)
def test_the_trainer_choice_sets_the_loader_batch_lr_and_checkpoint_cadence(
    primary, trainer, expected
):
    assert _values(primary, f"trainer={trainer}") == expected


def test_the_command_line_wins_over_the_gpu_trainer():
    got = _values(
        "distill", "trainer=multi_gpu", "checkpoint.every_n_steps=1000", "data.num_workers=2",
        "optim.lr=1e-3", "data.max_duration=600",
    )  # fmt: skip
    assert got == (600.0, 30, 2, True, 1e-3, 1000, False)


def test_the_cpu_demo_keeps_its_settings():
    """recipes/synthetic/run.sh (``+experiment=demo_synthetic``, the CPU trainer)."""
    assert _values("train", "+experiment=demo_synthetic") == (30.0, 8, 1, False, 2e-3, 200, True)
