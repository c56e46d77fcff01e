"""The training sampler's place in its epoch, saved and restored through public APIs only.

A DataLoader runs its sampler ahead of training (worker prefetch, Lightning's one-batch lookahead),
so the batches a lhotse sampler has given out are more than the batches trained, and a run resumed
from the sampler's own state would skip the difference. :class:`ResumableSampler` is the sampler
the DataLoader (and so Lightning) sees: it passes the lhotse sampler's batches through unchanged,
and counts

- the batches of the current pass it has handed out, and whether the lhotse sampler ran out;
- the batches *trained*: :meth:`~ResumableSampler.batch_trained`, once per training batch (the
  data module calls it from its ``on_before_batch_transfer`` hook).

Its :meth:`~ResumableSampler.state_dict` is lhotse's own state dict, with lhotse's sampling
diagnostics (``asdict`` of ``SamplingDiagnostics``) saying "``trained`` batches of epoch ``e``":
lhotse's ``load_state_dict`` fast-forwards a new sampler by exactly that count, its documented way
to resume. After the last batch of an epoch the place is the start of the next epoch (replaying a
used-up pass would make the resumed epoch empty).

Epoch numbers: a caller (Lightning) calls :meth:`~ResumableSampler.set_epoch` with its own epoch
count, which after a resume can differ from the restored sampler's epoch (Lightning counts an
epoch that ``max_steps`` stopped mid-way as processed). After a restore the first number given is
taken to mean the restored epoch, and later numbers keep that offset; without a restore the
numbers go to lhotse unchanged, so a fresh run's batches are lhotse's own, seed for seed.

Usage:
    sampler = ResumableSampler(DynamicBucketingSampler(cuts, ...), settings={"seed": 0, ...})
    loader = DataLoader(dataset, sampler=sampler, batch_size=None)
    for epoch in ...:
        sampler.set_epoch(epoch)
        for batch in loader:
            train(batch); sampler.batch_trained()
    state = sampler.state_dict()                 # {"train_sampler": lhotse state, "data": settings}
    ResumableSampler(DynamicBucketingSampler(cuts, ...), settings).load_state_dict(state)
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]


def _position(lhotse_state: dict) -> tuple[int, int]:
    """``(epoch, batches of it already trained)`` recorded in a lhotse sampler state dict."""
    from lhotse.dataset.sampling import SamplingDiagnostics

    diagnostics = SamplingDiagnostics().load_state_dict(copy.deepcopy(lhotse_state["diagnostics"]))
    return diagnostics.current_epoch, diagnostics.current_epoch_stats.total_batches


def _lhotse_diagnostics(epoch: int, batches: int) -> dict:
    """lhotse's diagnostics state dict for "``batches`` batches of ``epoch`` sampled"."""
    from lhotse.dataset.sampling import SamplingDiagnostics

    diagnostics = SamplingDiagnostics(current_epoch=epoch)  # one epoch, no batch yet
    diagnostics.current_epoch_stats.kept_batches = batches
    return diagnostics.state_dict()


class ResumableSampler(Sampler):
    """A lhotse ``CutSampler`` whose state is the place after the last *trained* batch.

    Args:
        sampler: the lhotse sampler (``DynamicBucketingSampler``, ``DynamicCutSampler``); its
            batches are yielded as they are.
        settings: everything else that fixes the batch sequence (subsets, number of cuts,
            buckets, ...); saved with the state, and a state saved under other settings is not
            restored (:meth:`load_state_dict`).
    """

    def __init__(self, sampler, settings: dict | None = None) -> None:
        self.sampler = sampler
        self.settings = dict(settings or {})
        self.trained = 0  # batches of the current pass trained
        self._drawn = 0  # batches of the current pass handed out
        self._ran_out = False  # the lhotse sampler ended the current pass
        self._resume = False  # the next pass goes on from a restored place
        self._offset: int | None = 0  # sampler epoch - caller's epoch (None: fix at set_epoch)

    @property
    def epoch(self) -> int:
        """The lhotse sampler's epoch (the pass in progress, or the next one)."""
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the caller's epoch ``epoch``: the lhotse sampler gets ``epoch`` + the offset (0
        unless restored). Another epoch than the current one starts afresh at its first batch.

        The first call after :meth:`load_state_dict` names the restored epoch, whether or not
        its pass has begun (Lightning draws the first batch, then sets the epoch)."""
        if self._offset is None:
            self._offset = self.epoch - epoch
        epoch += self._offset
        if epoch != self.epoch:  # lhotse itself drops a restored place on a new epoch
            self.trained, self._drawn, self._ran_out, self._resume = 0, 0, False, False
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        # A generator: nothing happens before its first batch is asked for, so a DataLoader that
        # calls iter() twice before drawing (multi-process start-up) counts one pass.
        return self._pass()

    def _pass(self) -> Iterator:
        if not self._resume:
            self.trained = self._drawn = 0
        self._resume, self._ran_out = False, False
        for batch in self.sampler:  # a restored lhotse sampler goes on where it was
            self._drawn += 1
            yield batch
        self._ran_out = True

    def batch_trained(self) -> None:
        """Count one more trained batch of the current pass (call once per training batch)."""
        if self.trained >= self._drawn:
            raise RuntimeError(
                f"batch_trained() called {self.trained + 1} times in a pass that gave out "
                f"{self._drawn} batches: it counts batches of this sampler only"
            )
        self.trained += 1

    def state_dict(self) -> dict:
        """``{"train_sampler": lhotse state dict, "data": settings}`` at the batch after the last
        trained one (the next epoch's first after the last batch of an epoch)."""
        epoch, trained = self.epoch, self.trained
        if self._ran_out and trained == self._drawn:
            epoch, trained = epoch + 1, 0
        state = self.sampler.state_dict()
        state["epoch"] = epoch
        state["diagnostics"] = _lhotse_diagnostics(epoch, trained)
        return {"train_sampler": state, "data": dict(self.settings)}

    def load_state_dict(self, state: dict) -> bool:
        """Go on from ``state`` (of :meth:`state_dict`) at the next pass; True if restored.

        lhotse's ``load_state_dict`` fast-forwards the sampler to the saved place. When the
        saved settings differ from ours the place means nothing: nothing is restored, and a
        warning says why if the saved place was mid-epoch (that epoch restarts at its first batch).
        """
        before = state.get("data", {})
        changed = {k: (before.get(k), v) for k, v in self.settings.items() if before.get(k) != v}
        if changed:
            if _position(state["train_sampler"])[1] > 0:
                diffs = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
                warnings.warn(
                    f"the training data or sampler settings changed since the checkpoint ({diffs})"
                    ": this epoch restarts from its first batch",
                    stacklevel=2,
                )
            return False
        self.sampler.load_state_dict(copy.deepcopy(state["train_sampler"]))
        self.trained = self._drawn = self.sampler.diagnostics.current_epoch_stats.total_batches
        self._ran_out, self._resume, self._offset = False, True, None
        return True
