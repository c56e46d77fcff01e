"""Count the host reads of tensor values in each training step: what would make a GPU step wait.

On a GPU, ``.item()``, ``.tolist()``, ``bool(t)``, ``int(t)``, ``torch.equal``, ``nonzero``, a
boolean-mask index or a copy to the CPU each make the host wait until the device has computed the
value. On the CPU they cost nothing, but they are the same calls: :func:`count_host_reads`
patches them and records, per training step (between two ``on_train_batch_start``), the call
site (``file:line``, asr_kd's or a library's) of every read on the training thread. Data-loader workers are other processes: their reads are not counted.

Usage:
    with count_host_reads() as steps:
        train(cfg)                # cfg's callbacks must include steps.callback (see tests)
    steps.per_step                # [Counter({"asr_kd/training/task.py:171": 1, ...}), ...]
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter

import torch
from lightning.pytorch.callbacks import Callback

__all__ = ["HostReads", "count_host_reads"]

_METHODS = ("item", "tolist", "numpy", "cpu", "nonzero", "__bool__", "__int__", "__float__",
            "__index__", "__format__")  # fmt: skip
_FUNCTIONS = ("equal", "nonzero", "masked_select")


class HostReads:
    """Per training step, a Counter of host-read sites; filled while counting is on."""

    def __init__(self) -> None:
        self.per_step: list[Counter] = []
        self.on = False
        self.callback = _StepMarker(self)

    def record(self) -> None:
        if not self.on or not self.per_step:
            return
        caller = sys._getframe(2)
        path = caller.f_code.co_filename.replace("\\", "/")
        for root, name in (("/asr_kd/", "asr_kd/"), ("/site-packages/", "")):
            if root in path:
                path = name + path.rsplit(root, 1)[1]
                break
        self.per_step[-1][f"{path}:{caller.f_lineno}"] += 1


class _StepMarker(Callback):
    def __init__(self, reads: HostReads) -> None:
        self.reads = reads

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.reads.per_step.append(Counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.reads.on = False  # the end of the run (final reads, checkpoints) is no step


def _wrap(reads: HostReads, real):
    def counted(*args, **kwargs):
        reads.record()
        return real(*args, **kwargs)

    return counted


def _wrap_getitem(reads: HostReads, real):
    def getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            reads.record()  # a boolean mask: the result's size is read from the device
        return real(self, index)

    return getitem


@contextlib.contextmanager
def count_host_reads():
    """Patch the host-read calls of ``torch.Tensor`` and ``torch`` while inside; yields the
    :class:`HostReads` being filled (counting starts at the first training step)."""
    reads = HostReads()
    saved = [(torch.Tensor, name, getattr(torch.Tensor, name)) for name in _METHODS]
    saved += [(torch, name, getattr(torch, name)) for name in _FUNCTIONS]
    saved.append((torch.Tensor, "__getitem__", torch.Tensor.__getitem__))
    try:
        for owner, name, real in saved[:-1]:
            setattr(owner, name, _wrap(reads, real))
        torch.Tensor.__getitem__ = _wrap_getitem(reads, saved[-1][2])
        reads.on = True
        yield reads
    finally:
        reads.on = False
        for owner, name, real in saved:
            setattr(owner, name, real)
