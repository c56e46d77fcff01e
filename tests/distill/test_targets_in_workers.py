"""Cached soft targets are looked up where the batch is built (the loader's worker processes):
the same numbers as the lookup on the training thread, frame counts checked per cut there, and a
distillation step that reads nothing on the host."""

from __future__ import annotations

import pytest
import torch

from asr_kd.data.datamodule import AsrDataModule
from asr_kd.distill.store import SoftTargetStore
from asr_kd.distill.teachers import SOFT_TARGETS_KEY, CachedTargets
from asr_kd.training.run import distill
from tests.helpers.tiny_runs import kd_student_run
from tests.training.test_host_reads import GPU_LIKE, reads_per_step

_MADE: dict[tuple, object] = {}  # hidden layers -> targets dir, dumped once per session


@pytest.fixture
def make_targets_dir(tmp_path_factory, prepared_data_dir, teacher_ckpt, dump_targets_config):
    """``make_targets_dir(hidden_layers)``: the tiny teacher's targets (+ those layers, fp16)."""
    from asr_kd.distill.dump import dump_targets

    def make(hidden_layers: tuple):
        if hidden_layers not in _MADE:
            out = tmp_path_factory.mktemp("targets_in_workers")
            extra = [f"hidden_layers=[{','.join(map(str, hidden_layers))}]"] * bool(hidden_layers)
            dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out, *extra))
            _MADE[hidden_layers] = out
        return _MADE[hidden_layers]

    return make


def _train_batches(data_dir, fields, num_workers: int) -> list[dict]:
    dm = AsrDataModule(data_dir, max_duration=10.0, num_buckets=2, num_workers=num_workers)
    dm.train_batch_fields = fields
    return list(dm.train_dataloader())


@pytest.mark.parametrize("hidden_layers", [(), (1,)])
def test_targets_from_the_workers_equal_the_training_thread_lookup(
    prepared_data_dir, tmp_path, make_targets_dir, hidden_layers
):
    store = SoftTargetStore(make_targets_dir(hidden_layers))
    targets = CachedTargets(store, k=2, hidden_layers=hidden_layers, subsampling_factor=4)
    with_fields = _train_batches(prepared_data_dir, targets.batch_fields, num_workers=1)
    plain = _train_batches(prepared_data_dir, None, num_workers=1)
    assert [b["cut_ids"] for b in with_fields] == [b["cut_ids"] for b in plain]  # same order
    assert len(plain) > 1
    for new, old in zip(with_fields, plain, strict=True):
        assert SOFT_TARGETS_KEY not in old
        got, expected = targets(new), targets(old)  # from the worker / looked up here
        assert got.ids.dtype == expected.ids.dtype == torch.int64
        for a, b in zip(got[:3], expected[:3], strict=True):
            assert torch.equal(a, b)
        assert (got.hidden is None) == (expected.hidden is None) == (not hidden_layers)
        for a, b in zip(got.hidden or (), expected.hidden or (), strict=True):
            assert torch.equal(a, b)


def test_a_cut_whose_stored_frames_differ_is_named_by_the_worker(
    prepared_data_dir, make_targets_dir
):
    store = SoftTargetStore(make_targets_dir(()))
    targets = CachedTargets(store, subsampling_factor=2)  # the store holds factor-4 frames
    with pytest.raises(ValueError, match=r"cut \S+: teacher has \d+ frames, student \d+ \("):
        _train_batches(prepared_data_dir, targets.batch_fields, num_workers=0)


@pytest.mark.parametrize("hidden", [False, True])
def test_a_distillation_step_from_cached_targets_reads_nothing_on_the_host(
    monkeypatch, tmp_path, prepared_data_dir, teacher_ckpt, make_targets_dir, hidden
):
    kd = ("distill=hidden",)  # teacher layer 1 of the tiny one-layer teacher
    cfg = kd_student_run(
        prepared_data_dir, tmp_path / "s", teacher_ckpt, make_targets_dir((1,) if hidden else ()),
        *GPU_LIKE, "bad_batches_read_every=50", *(kd if hidden else ()), steps=4,
    )  # fmt: skip
    steps = reads_per_step(monkeypatch, distill, cfg)
    assert [sum(c.values()) for c in steps[:3]] == [0, 0, 0], steps  # the last also ends the run
