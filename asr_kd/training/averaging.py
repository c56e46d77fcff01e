"""Checkpoint averaging (icefall's and WeNet's ``--avg``): the mean of the model's weights at the
last N snapshots of a run, written as ``checkpoints/averaged.ckpt``.

Snapshots are taken every ``every_n_steps`` counting back from the final step:

    steps  max_steps - (N - 1) * S,  ...,  max_steps - S,  max_steps      (N = last_n, S = every_n_steps)

What is averaged: every parameter and the running statistics of every BatchNorm
(``running_mean``, ``running_var``), as icefall's ``average_checkpoints`` does. Every other
state entry (the CMVN buffers, BatchNorm's ``num_batches_tracked``) is copied from the final
step: they are data, not weights. The sum is kept in memory in float64 (one model's worth of
tensors, not N checkpoints) and travels inside ``last.ckpt`` as this callback's state, so a
resumed run averages exactly what an uninterrupted one does.

Usage:
    averager = WeightAverager(last_n=5, every_n_steps=100, max_steps=2000)  # steps 1600..2000
    trainer = lightning.Trainer(max_steps=2000, callbacks=[averager]); trainer.fit(task)
    model.load_state_dict(averager.averaged_state(model))

>>> WeightAverager(last_n=3, every_n_steps=100, max_steps=1000).snapshot_steps
[800, 900, 1000]
"""

from __future__ import annotations

import warnings

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from asr_kd.errors import ConfigError

__all__ = ["WeightAverager", "averaged_names"]

_BN_STATS = ("running_mean", "running_var")


def averaged_names(model: nn.Module) -> list[str]:
    """State-dict names of ``model`` that are averaged: parameters and BatchNorm running stats."""
    names = [name for name, _ in model.named_parameters()]
    for prefix, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            names += [f"{prefix}.{stat}" if prefix else stat for stat in _BN_STATS]
    return names


class WeightAverager(Callback):
    """Sums ``pl_module.model``'s averaged weights at each snapshot step (see the module doc).

    Args:
        last_n: snapshots averaged (N >= 1).
        every_n_steps: optimizer steps between snapshots (S >= 1).
        max_steps: the run's final step; N * S must not exceed it.
    """

    def __init__(self, last_n: int, every_n_steps: int, max_steps: int):
        if last_n < 1 or every_n_steps < 1:
            raise ConfigError(
                f"average.last_n={last_n}, average.every_n_steps={every_n_steps}: expected "
                "last_n >= 1 and every_n_steps >= 1 (average.last_n=0 turns averaging off)"
            )
        if max_steps <= 0 or last_n * every_n_steps > max_steps:
            raise ConfigError(
                f"average.last_n={last_n} x average.every_n_steps={every_n_steps} = "
                f"{last_n * every_n_steps} steps > trainer.max_steps={max_steps}; expected "
                "last_n * every_n_steps <= trainer.max_steps (a positive step count): lower "
                "either or raise trainer.max_steps"
            )
        self.last_n, self.every_n_steps, self.max_steps = last_n, every_n_steps, max_steps
        self.sums: dict[str, torch.Tensor] = {}
        self.steps: list[int] = []  # the snapshot steps summed so far

    @property
    def snapshot_steps(self) -> list[int]:
        """The steps whose weights are averaged, in order; the last is ``max_steps``."""
        first = self.max_steps - (self.last_n - 1) * self.every_n_steps
        return list(range(first, self.max_steps + 1, self.every_n_steps))

    @property
    def complete(self) -> bool:
        """True once every snapshot step has been summed."""
        return self.steps == self.snapshot_steps

    def add(self, model: nn.Module, step: int) -> None:
        """Add ``model``'s averaged weights at ``step`` to the sum (once per step)."""
        if step in self.steps or step not in self.snapshot_steps:
            return
        state = model.state_dict()
        for name in averaged_names(model):
            value = state[name].detach().to("cpu", torch.float64)
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps.append(step)

    def averaged_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model.state_dict()`` with the averaged entries replaced by their mean over the
        snapshots (each in its own dtype and device); the rest as ``model`` holds them now."""
        if not self.steps:
            raise RuntimeError("no snapshot summed yet: nothing to average")
        state = model.state_dict()
        return {
            name: (self.sums[name] / len(self.steps)).to(value.dtype).to(value.device)
            if name in self.sums
            else value.clone()
            for name, value in state.items()
        }

    # ------------------------------------------------------------ Lightning hooks
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # global_step counts optimizer steps; with gradient accumulation several batches end at
        # one step, and add() takes each step once
        self.add(pl_module.model, int(trainer.global_step))

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.complete:
            warnings.warn(
                f"checkpoint averaging: summed steps {self.steps} of {self.snapshot_steps} "
                f"(training stopped at step {trainer.global_step}, before trainer.max_steps="
                f"{self.max_steps}); averaged.ckpt is not written",
                stacklevel=1,
            )

    def state_dict(self) -> dict:
        return {
            "last_n": self.last_n,
            "every_n_steps": self.every_n_steps,
            "max_steps": self.max_steps,
            "steps": list(self.steps),
            "sums": dict(self.sums),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        saved = {key: state_dict[key] for key in ("last_n", "every_n_steps", "max_steps")}
        if saved != {"last_n": self.last_n, "every_n_steps": self.every_n_steps,
                     "max_steps": self.max_steps}:  # fmt: skip
            # other snapshot steps: the saved sum would mix two schedules, so restart it
            warnings.warn(
                f"checkpoint averaging: the checkpoint summed {saved}, this run averages "
                f"last_n={self.last_n}, every_n_steps={self.every_n_steps}, max_steps="
                f"{self.max_steps}; the saved partial sum is dropped",
                stacklevel=1,
            )
            return
        self.steps = [int(s) for s in state_dict["steps"]]
        self.sums = dict(state_dict["sums"])
