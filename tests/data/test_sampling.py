"""ResumableSampler alone (no Lightning): the saved place is after the last *trained* batch."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from lhotse.testing.dummies import dummy_cut
from torch.utils.data import DataLoader, Dataset

from asr_kd.data.sampling import ResumableSampler

SETTINGS = {"train_subsets": ["train"], "num_buckets": 3}

# In-memory dummy cuts: lhotse's advice to read them lazily does not apply.
pytestmark = pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler")


class _CutIds(Dataset):
    """A mini-batch of cuts -> its cut ids (picklable, for loader worker processes)."""

    def __getitem__(self, cuts) -> list[str]:
        return [c.id for c in cuts]


def _lhotse_sampler() -> DynamicBucketingSampler:
    cuts = CutSet.from_cuts(dummy_cut(i, duration=0.5 + (7 * i % 11) / 4) for i in range(40))
    return DynamicBucketingSampler(
        cuts, max_duration=6.0, num_buckets=3, shuffle=True, seed=0, world_size=1, rank=0
    )


def _uninterrupted(epochs: int) -> list[list[list[str]]]:
    """Cut ids per batch of each epoch of the lhotse sampler on its own."""
    sampler, out = _lhotse_sampler(), []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append([[c.id for c in batch] for batch in sampler])
    return out


def _loader(sampler: ResumableSampler, workers: int = 0) -> DataLoader:
    """As AsrDataModule builds it; with ``workers``, a worker process prefetches: the sampler runs
    ahead of the batches taken (and the loader calls ``iter(sampler)`` twice before drawing)."""
    return DataLoader(_CutIds(), sampler=sampler, batch_size=None, num_workers=workers)


def _checkpointed(state: dict) -> dict:
    """``state`` through ``torch.save`` / ``torch.load(weights_only=True)``, as in a checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _train(
    sampler: ResumableSampler,
    epoch: int,
    batches: int | None = None,
    workers: int = 0,
    fit_start: bool = True,
) -> list:
    """Train ``batches`` batches (all: None) of the caller's epoch ``epoch`` as Lightning does:
    at the start of a fit it draws the first batch before it calls ``set_epoch``, in later epochs
    it calls ``set_epoch`` first; every batch taken is counted as trained."""
    if not fit_start:
        sampler.set_epoch(epoch)
    seen = []
    for batch in _loader(sampler, workers):
        if fit_start and not seen:
            sampler.set_epoch(epoch)
        seen.append(batch)
        sampler.batch_trained()
        if len(seen) == batches:
            break
    return seen


def test_a_fresh_sampler_gives_lhotses_batches_and_epochs_unchanged():
    whole = _uninterrupted(3)
    sampler = ResumableSampler(_lhotse_sampler(), SETTINGS)
    for epoch in range(3):
        assert _train(sampler, epoch, workers=1, fit_start=epoch == 0) == whole[epoch]
    assert len(whole[0]) > 4 and whole[0] != whole[1]


def test_resume_mid_epoch_goes_on_after_the_last_trained_batch_not_the_last_drawn():
    whole = _uninterrupted(2)
    first = ResumableSampler(_lhotse_sampler(), SETTINGS)
    trained = _train(first, 0, batches=3, workers=1)  # the worker drew more than 3
    state = _checkpointed(first.state_dict())
    assert state["data"] == SETTINGS

    resumed = ResumableSampler(_lhotse_sampler(), SETTINGS)
    assert resumed.load_state_dict(state)
    # the caller's own epoch count (5): taken to mean the restored epoch
    one_more = _train(resumed, 5, batches=1, workers=1)
    assert trained + one_more == whole[0][:4]

    # resumed twice: the count went on from the restored place
    again = ResumableSampler(_lhotse_sampler(), SETTINGS)
    assert again.load_state_dict(_checkpointed(resumed.state_dict()))
    assert trained + one_more + _train(again, 5) == whole[0]
    # the caller's next epoch is the sampler's next: the same shuffle as uninterrupted
    assert _train(again, 6, fit_start=False) == whole[1]


def test_resume_after_the_last_batch_of_an_epoch_starts_the_next_epoch():
    whole = _uninterrupted(2)
    first = ResumableSampler(_lhotse_sampler(), SETTINGS)
    assert _train(first, 0) == whole[0]
    state = _checkpointed(first.state_dict())
    assert state["train_sampler"]["epoch"] == 1

    resumed = ResumableSampler(_lhotse_sampler(), SETTINGS)
    assert resumed.load_state_dict(state)
    assert _train(resumed, 0) == whole[1]


def test_a_drawn_but_untrained_last_batch_is_trained_after_resume():
    whole = _uninterrupted(1)
    first = ResumableSampler(_lhotse_sampler(), SETTINGS)
    first.set_epoch(0)
    batches = list(_loader(first))  # the sampler ran out ...
    for _ in batches[:-1]:
        first.batch_trained()  # ... but its last batch was not trained
    resumed = ResumableSampler(_lhotse_sampler(), SETTINGS)
    assert resumed.load_state_dict(_checkpointed(first.state_dict()))
    assert _train(resumed, 0) == [whole[0][-1]]


def test_changed_settings_restart_the_epoch_with_a_warning_when_it_was_mid_way():
    whole = _uninterrupted(1)
    first = ResumableSampler(_lhotse_sampler(), SETTINGS)
    _train(first, 0, batches=2)
    state = _checkpointed(first.state_dict())

    changed = ResumableSampler(_lhotse_sampler(), SETTINGS | {"num_buckets": 4})
    with pytest.warns(
        UserWarning, match=r"settings changed since the checkpoint \(num_buckets 3 -> 4\)"
    ):
        assert not changed.load_state_dict(state)
    assert _train(changed, 0) == whole[0]

    # at an epoch boundary nothing is lost: no warning
    _train(first, 0)
    changed = ResumableSampler(_lhotse_sampler(), SETTINGS | {"num_buckets": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not changed.load_state_dict(_checkpointed(first.state_dict()))


def test_more_trained_batches_than_drawn_is_an_error():
    sampler = ResumableSampler(_lhotse_sampler(), SETTINGS)
    with pytest.raises(RuntimeError, match="gave out 0 batches"):
        sampler.batch_trained()
