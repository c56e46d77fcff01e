"""Non-finite losses counted on the device, agreed across ranks, read by the host every N steps.

A host read of a device value (``bool(torch.isfinite(loss))``, ``loss.item()``) makes the host
wait until the GPU has computed it: the backward kernels and the next batch's copy are queued
late, every step. So :class:`BadBatches` keeps its counts on the loss's device:

- :meth:`BadBatches.loss` notes whether this micro-batch's loss is finite and gives the loss to
  train on, ``torch.where(finite, loss, 0)`` (no branch on the host);
- :meth:`BadBatches.before_optimizer_step` (after backward, before clipping) all-reduces the
  flag (MAX) when several ranks train: when any rank's loss was non-finite, every rank zeroes its
  gradients (they were all-reduced with that rank's NaNs in them anyway), so the ranks stay in
  step and count the same bad steps;
- :meth:`BadBatches.check` (every ``read_every`` steps and at the end of training) reads the
  counts in one host read and raises when ``max_consecutive`` bad steps came in a row: every rank
  reads the same agreed counts at the same step, so all ranks stop together with the same error
  and none is left waiting in an all-reduce.

A bad step is skipped without a host read: the agreed flag is handed to the optimizer as
``found_inf`` (the tensor PyTorch's fused AdamW reads, as under a GradScaler), whose kernel then
leaves weights, moments and step count as they were. An optimizer without that path (not
``fused``) runs on the all-zero gradient instead: AdamW moves the weights by its momentum and
weight decay alone.

Usage:
    bad = BadBatches(max_consecutive=20, read_every=50)
    loss = bad.loss(loss, ctc, kd)              # training_step: what backward sees
    bad.before_optimizer_step(parameters)       # on_before_optimizer_step
    bad.check(global_step)                      # every step: reads the host every 50
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["BadBatches", "zero_gradients_if"]

# Slots of the device state vector.
_BAD_NOW, _RUN, _TOTAL, _HIT_STEP, _LOCAL, _LAST = 0, 1, 2, 3, 4, slice(5, 8)


def zero_gradients_if(
    grads: list[torch.Tensor], flag: torch.Tensor, read_is_free: bool | None = None
) -> None:
    """Zero every tensor of ``grads`` in place when the 0-dim bool ``flag`` is true.

    On an accelerator with no host read: a fill under the flag (never a multiply: NaN * 0 is
    NaN). On the CPU a read waits for nothing and the broadcast fill costs ~15 ms per 5 M values
    per step, so a branch. ``read_is_free``: None = ``flag`` is on the CPU.
    """
    if read_is_free is None:
        read_is_free = flag.device.type == "cpu"
    if not read_is_free:
        for g in grads:
            g.masked_fill_(flag, 0.0)
    elif bool(flag):
        for g in grads:
            g.zero_()


class BadBatches:
    """Counts of non-finite training losses, on the device, agreed across ranks.

    Args:
        max_consecutive: this many bad steps in a row stop training (``RuntimeError``).
        read_every: steps between host reads of the counts (each read waits for the device).
    """

    def __init__(self, max_consecutive: int, read_every: int = 50) -> None:
        if read_every < 1:
            raise ValueError(f"bad_batches_read_every={read_every}, expected >= 1")
        self.max_consecutive, self.read_every = int(max_consecutive), int(read_every)
        self.base = 0  # bad steps before a resume (from the checkpoint)
        self._state: torch.Tensor | None = None  # (8,) float64 on the loss's device

    def _on(self, device: torch.device) -> torch.Tensor:
        if self._state is None or self._state.device != device:
            state = torch.zeros(8, dtype=torch.float64, device=device)
            state[_HIT_STEP] = -1.0
            if self._state is not None:
                state.copy_(self._state)
            self._state = state
        return self._state

    def loss(self, loss: torch.Tensor, ctc: torch.Tensor, kd: torch.Tensor) -> torch.Tensor:
        """``loss`` (0-dim) where it is finite, else 0; notes the micro-batch as bad (and its
        ``loss``, ``ctc`` and ``kd`` for the error message). No host read."""
        state = self._on(loss.device)
        finite = torch.isfinite(loss)
        state[_BAD_NOW] = torch.maximum(state[_BAD_NOW], (~finite).double())
        last = torch.stack((loss, ctc, kd)).detach().double()
        state[_LAST] = torch.where(finite, state[_LAST], last)
        state[_LOCAL] += (~finite).double()
        return torch.where(finite, loss, torch.zeros_like(loss))

    def before_optimizer_step(
        self, parameters: Iterable[torch.nn.Parameter], step: int, optimizer=None
    ) -> None:
        """Agree on the step's flag across ranks, zero every gradient of a bad step, count it,
        and hand the flag to a fused ``optimizer`` as ``found_inf`` (it skips the step).

        ``step``: the optimizer step about to run (the error names it). No host read."""
        if self._state is None:  # no training step ran through :meth:`loss`
            return
        state = self._state
        bad = state[_BAD_NOW : _BAD_NOW + 1].clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        flag = bad[0] > 0
        zero_gradients_if([p.grad for p in parameters if p.grad is not None], flag)
        if optimizer is not None and all(g.get("fused") for g in optimizer.param_groups):
            optimizer.found_inf = flag.float()  # read by the fused kernel on the device
        run = torch.where(flag, state[_RUN] + 1, torch.zeros_like(state[_RUN]))
        reached = (run >= self.max_consecutive) & (state[_HIT_STEP] < 0)
        state[_HIT_STEP] = torch.where(reached, float(step), state[_HIT_STEP])
        state[_RUN] = run
        state[_TOTAL] += bad[0]
        state[_BAD_NOW] = 0.0

    @property
    def total(self) -> int:
        """Bad steps so far, a resumed run's earlier ones included (one host read)."""
        return self.base + (0 if self._state is None else int(self._state[_TOTAL]))

    def check(self, step: int, force: bool = False) -> int | None:
        """Every ``read_every`` steps (or when ``force``): one host read; raise ``RuntimeError``
        when a run of ``max_consecutive`` bad steps was reached, else return :attr:`total`
        (None: not read)."""
        if self._state is None or not (force or step % self.read_every == 0):
            return None
        values = self._state.tolist()
        if values[_HIT_STEP] < 0:
            return self.base + int(values[_TOTAL])
        last = values[_LAST]
        seen = f"loss={last[0]}, ctc={last[1]}, kd={last[2]}" if values[_LOCAL] else "none here"
        raise RuntimeError(
            f"{self.max_consecutive} consecutive batches with a non-finite loss on some rank "
            f"(last on this rank: {seen}) at step {int(values[_HIT_STEP])}; expected at most "
            f"max_consecutive_bad_batches={self.max_consecutive - 1}. Lower optim.lr, check "
            "the data, or use fp32 (trainer.precision=32-true)."
        )
