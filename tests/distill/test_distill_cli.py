"""asr-kd-distill: a few steps cached and online, equal losses, refused incompatibilities."""

from __future__ import annotations

import pytest
import torch

from asr_kd.checkpoint import load_checkpoint
from asr_kd.config import compose
from asr_kd.data.datamodule import build_datamodule, load_cuts
from asr_kd.distill.dump import dump_targets
from asr_kd.distill.losses import distill_loss
from asr_kd.distill.store import SoftTargetStore
from asr_kd.distill.teachers import CachedTargets, OnlineTeacher
from asr_kd.errors import ConfigError
from asr_kd.models.loading import load_model
from asr_kd.training.run import distill
from tests.helpers.tiny_runs import kd_student_run


def _distill_cfg(tiny_config, data_dir, out_dir, teacher_ckpt, targets_dir, *overrides):
    return kd_student_run(data_dir, out_dir, teacher_ckpt, targets_dir, *overrides)


@pytest.mark.parametrize("source", ["cached", "online"])
def test_a_few_steps_of_each_source(
    source, tmp_path, tiny_config, prepared_data_dir, teacher_ckpt, targets_dir
):
    cfg = _distill_cfg(
        tiny_config, prepared_data_dir, tmp_path, teacher_ckpt, targets_dir,
        "distill=delay_window", f"distill.source={source}", "distill.k=4",
    )  # fmt: skip
    result = distill(cfg)
    assert result["global_step"] == 3 and result["bad_batches"] == 0
    assert result["metrics"]["train/kd"] > 0
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["asr_kd"]["role"] == "student"
    assert not any(k.startswith("teacher") for k in ckpt["state_dict"])  # teacher not saved
    assert load_model(tmp_path / "checkpoints" / "last.ckpt").model.streaming


def test_cached_kd_trains_on_prepared_speed_copies_with_their_own_targets(
    tmp_path, prepared_sp_data_dir, teacher_ckpt, dump_targets_config
):
    """Speed perturbation with cached targets: the dump gives every prepared copy its own
    targets (its own frame count), and asr-kd-distill trains on batches holding copies."""
    data, targets = prepared_sp_data_dir, tmp_path / "targets"
    dump_targets(dump_targets_config(data, teacher_ckpt, targets))
    store = SoftTargetStore(targets)
    cuts = list(load_cuts(data, "train"))
    assert len(store) == len(cuts) and all(c.id in store for c in cuts)
    copy = next(c for c in cuts if c.id.endswith("_sp0.9"))
    original = copy.id.removesuffix("_sp0.9")
    lens = store.batch([original, copy.id])[2].tolist()
    assert abs(lens[1] - lens[0] / 0.9) <= 2
    cfg = kd_student_run(data, tmp_path / "run", teacher_ckpt, targets, "distill.k=4")
    assert distill(cfg)["global_step"] == 3
    trained = [
        c.id
        for batch, _ in zip(build_datamodule(cfg.data).train_sampler(), range(3), strict=False)
        for c in batch
    ]
    assert any("_sp" in cut_id for cut_id in trained)


def test_distill_none_is_plain_ctc_without_a_teacher(tmp_path, tiny_config, prepared_data_dir):
    cfg = tiny_config("distill", prepared_data_dir, tmp_path, "distill=none")
    result = distill(cfg)
    assert result["global_step"] == 3 and result["metrics"]["train/kd"] == 0


def test_cached_and_online_give_the_same_loss_on_the_same_batch(
    prepared_data_dir, teacher_ckpt, targets_dir
):
    teacher = load_model(teacher_ckpt)
    dm = build_datamodule(compose("dump_targets", [f"data.dir={prepared_data_dir}"]).data)
    # the dump's own batching: the same cuts padded together, as the teacher saw them
    batch = next(iter(dm.dataloader("train", shuffle=False, max_duration=200.0)))
    cached = CachedTargets(SoftTargetStore(targets_dir))(batch)
    online = OnlineTeacher(teacher.model, temperature=2.0, k=4)(batch)
    assert torch.equal(cached[2], online[2])
    gen = torch.Generator().manual_seed(0)
    student = torch.log_softmax(torch.randn(*online[1].shape[:2], 29, generator=gen), -1)
    losses = [
        distill_loss(
            student,
            lens,
            batch["tokens"],
            batch["token_lens"],
            ids,
            probs,
            alpha=0.5,
            temperature=2.0,
            shift=1,
            delay_window=1,
        )  # fmt: skip
        for ids, probs, lens, _ in (cached, online)
    ]
    assert losses[0].kd.item() == pytest.approx(losses[1].kd.item(), rel=1e-3)
    assert losses[0].loss.item() == pytest.approx(losses[1].loss.item(), rel=1e-3)


def test_incompatible_teacher_or_targets_are_refused_before_step_one(
    tmp_path, tiny_config, prepared_data_dir, teacher_ckpt, targets_dir
):
    def cfg(*overrides):
        return _distill_cfg(
            tiny_config, prepared_data_dir, tmp_path / "run", teacher_ckpt, targets_dir, *overrides
        )

    # another frame rate: student subsampling 6 (60 ms) vs the teacher's 4 (40 ms)
    with pytest.raises(ValueError, match=r"teacher frame shift 40 ms .* student frame shift 60"):
        distill(cfg("model.subsampling_factor=6", "distill.source=online"))
    # targets made at another temperature than the configured one: a setting to match, not
    # "made by another teacher" (regression: it said so)
    with pytest.raises(
        ConfigError,
        match=r"^distill\.temperature=1\.0 but the soft targets in \S+ were dumped at "
        r"temperature 2\.0; set distill\.temperature=2\.0 or dump again with temperature=1\.0$",
    ):
        distill(cfg("distill.temperature=1.0"))
    with pytest.raises(ValueError, match="distill.k=8 > k=4"):
        distill(cfg("distill.k=8"))
    with pytest.raises(ValueError, match="speed_perturb=false"):
        distill(cfg("data.speed_perturb=true"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_another_tokenizer_is_refused(tmp_path, tiny_config, prepared_data_dir, teacher_ckpt):
    from asr_kd.checkpoint import atomic_torch_save
    from asr_kd.data.tokenizer import Tokenizer

    ckpt = torch.load(teacher_ckpt, weights_only=True)
    symbols = ckpt["asr_kd"]["tokenizer"]["symbols"]
    ckpt["asr_kd"]["tokenizer"] = Tokenizer("char", symbols[:-1]).to_dict()  # no "Z"
    foreign = tmp_path / "foreign.ckpt"
    atomic_torch_save(ckpt, foreign)
    cfg = tiny_config(
        "distill", prepared_data_dir, tmp_path / "run", f"teacher_ckpt={foreign}",
        "distill.source=online",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"teacher vocab 28 != student vocab 29"):
        distill(cfg)


def test_cached_targets_serve_the_duplicated_cuts_of_a_distributed_epoch(
    prepared_data_dir, targets_dir
):
    """Regression: with DDP, lhotse pads the last round of an epoch that has fewer cuts than
    ranks with copies renamed ``<id>_dup<n>``; the cached-targets lookup raised KeyError on
    them, so a multi-GPU KD run crashed at an epoch's end."""
    from lhotse import CutSet
    from lhotse.dataset import DynamicCutSampler
    from lhotse.dataset.sampling.base import mark_as_duplicate
    from lhotse.testing.dummies import dummy_cut

    three = CutSet.from_cuts(dummy_cut(i, duration=1.0) for i in range(3))
    rank1 = DynamicCutSampler(three, max_duration=1.0, world_size=2, rank=1)
    assert [c.id for b in rank1 for c in b][-1] == mark_as_duplicate(0)("dummy-mono-cut-0002")

    dm = build_datamodule(compose("dump_targets", [f"data.dir={prepared_data_dir}"]).data)
    batch = next(iter(dm.dataloader("train", shuffle=False, max_duration=200.0)))
    renamed = [mark_as_duplicate(0)(c) for c in batch["cut_ids"]]
    renamed[0] = mark_as_duplicate(1)(renamed[0])  # a copy of a copy
    targets = CachedTargets(SoftTargetStore(targets_dir), k=4)
    got, want = targets(dict(batch, cut_ids=renamed)), targets(batch)
    assert got.hidden is None and want.hidden is None  # no hidden layers in a soft-target store
    for g, w in zip(got[:3], want[:3], strict=True):
        assert torch.equal(g, w)


def test_cached_targets_from_another_teacher_are_refused(
    tmp_path, tiny_config, prepared_data_dir, teacher_ckpt, targets_dir
):
    """Targets dumped by teacher A, ``teacher_ckpt`` naming teacher B: same tokenizer, frame
    rate, k and temperature, other weights. Only the checkpoint hash tells them apart, so an
    expected hash read from the store itself would let B's student learn A's posteriors."""
    from asr_kd.checkpoint import atomic_torch_save, file_sha256

    ckpt = torch.load(teacher_ckpt, weights_only=True)
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][name] = ckpt["state_dict"][name] + 0.01  # another teacher
    other = tmp_path / "teacher_b.ckpt"
    atomic_torch_save(ckpt, other)
    load_model(other)  # a valid teacher checkpoint in its own right
    sha_a, sha_b = file_sha256(teacher_ckpt), file_sha256(other)
    assert SoftTargetStore(targets_dir).fingerprint["checkpoint_sha256"] == sha_a != sha_b
    cfg = _distill_cfg(
        tiny_config, prepared_data_dir, tmp_path / "run", other, targets_dir,
        "distill.source=cached", "distill.k=4", "distill.temperature=2.0",
    )  # fmt: skip
    with pytest.raises(ValueError, match="made by another teacher") as err:
        distill(cfg)
    assert f"checkpoint_sha256: '{sha_a}' (targets) != '{sha_b}' (configured teacher)" in str(
        err.value
    )
    for same in ("tokenizer", "frame_shift_ms", "k:", "temperature"):
        assert same not in str(err.value)  # only the checkpoint differs
    assert not (tmp_path / "run" / "checkpoints").exists()
