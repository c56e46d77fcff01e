"""Soft-target integrity: a damaged shard is named on open (sizes) or by verify (SHA-256), a
resumed dump recomputes it, and stores from before sizes were recorded still load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from asr_kd.config import compose
from asr_kd.distill.dump import dump_targets
from asr_kd.distill.store import SoftTargetStore
from asr_kd.errors import BadFileError, MissingFileError


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _truncate(path, size):
    """``head -c SIZE path > x && mv x path``"""
    path.write_bytes(path.read_bytes()[:size])


def _flip_last_byte(path):
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


def _index(targets_dir):
    return json.loads((targets_dir / "index.json").read_text())


def _assert_same_targets(expected_dir, got_dir):
    expected, got = SoftTargetStore(expected_dir), SoftTargetStore(got_dir)
    assert sorted(expected._cuts) == sorted(got._cuts)
    for cut_id in expected._cuts:
        for a, b in zip(expected.get(cut_id), got.get(cut_id), strict=True):
            assert torch.equal(a, b), cut_id


def test_a_truncated_shard_is_named_on_open_with_the_repair(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir
):
    # The bug: a truncated shard opened fine, and asr-kd-distill died at its first batch with
    # numpy's "EOF: reading array header, expected 118 bytes got 90", naming no file.
    out = _copy(targets_dir, tmp_path / "targets")
    probs = out / "shard_00000.probs.npy"
    size = probs.stat().st_size
    _truncate(probs, 100)
    with pytest.raises(BadFileError) as err:
        SoftTargetStore(out)
    message = str(err.value)
    assert "\n" not in message
    assert f"soft targets in {out} are damaged: " in message
    assert f"shard_00000.probs.npy is 100 bytes, index.json says {size}; " in message
    repair = (
        f"re-run asr-kd-dump-targets teacher_ckpt={teacher_ckpt} data.dir={prepared_data_dir} "
        f"subset=train out_dir={out} k=4 temperature=2.0 (it recomputes damaged shards)"
    )
    assert message.endswith(repair)
    # an index from before teacher_ckpt was recorded: the dump's saved config.yaml names it
    index = _index(out)
    del index["teacher_ckpt"]
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(BadFileError, match=f"teacher_ckpt={teacher_ckpt} data.dir="):
        SoftTargetStore(out)
    (out / "config.yaml").unlink()  # nothing names the teacher: generic words
    with pytest.raises(BadFileError, match="with the dump's teacher_ckpt, data.dir, subset"):
        SoftTargetStore(out)
    # a shard file that is gone, and a commit marker cut short
    shutil.copy(targets_dir / "shard_00000.probs.npy", probs)
    (out / "shard_00001.ids.npy").unlink()
    with pytest.raises(MissingFileError, match="shard_00001.ids.npy is missing; re-run"):
        SoftTargetStore(out)
    shutil.copy(targets_dir / "shard_00001.ids.npy", out)
    _truncate(out / "shard_00002.json", 50)
    with pytest.raises(BadFileError, match=r"shard_00002\.json is 50 bytes, index.json says \d+;"):
        SoftTargetStore(out)


def test_a_damaged_store_stops_distill_before_any_step(
    tmp_path, monkeypatch, tiny_config, targets_dir, teacher_ckpt, prepared_data_dir
):
    import asr_kd.training.run as run

    out = _copy(targets_dir, tmp_path / "targets")
    _truncate(out / "shard_00000.probs.npy", 100)

    def fit(*args, **kwargs):
        raise AssertionError("training started on damaged soft targets")

    monkeypatch.setattr(run, "fit", fit)
    cfg = tiny_config(
        "distill", prepared_data_dir, tmp_path / "student", f"teacher_ckpt={teacher_ckpt}",
        f"targets_dir={out}", "model=student_tiny", "distill.source=cached", "distill.k=4",
    )  # fmt: skip
    with pytest.raises(BadFileError, match="shard_00000.probs.npy is 100 bytes"):
        run.distill(cfg)


def test_a_flipped_byte_is_caught_by_verify_not_by_open(tmp_path, targets_dir):
    out = _copy(targets_dir, tmp_path / "targets")
    shards = len(_index(out)["shards"])
    summary = SoftTargetStore(out).verify()
    assert summary["verified"] and summary["shards"] == shards and summary["files"] == 3 * shards
    assert summary["unrecorded_shards"] == []
    _flip_last_byte(out / "shard_00001.probs.npy")  # same size, other bytes
    store = SoftTargetStore(out)  # open only stats: the size is right
    assert len(store) == _index(out)["num_cuts"]
    with pytest.raises(BadFileError, match=r"shard_00001\.probs\.npy has SHA-256 [0-9a-f]{64}, "):
        store.verify()
    # the same through asr-kd-dump-targets verify=true, which needs no teacher and dumps nothing
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(BadFileError, match=r"index\.json says [0-9a-f]{64}; re-run asr-kd-dump"):
        dump_targets(compose("dump_targets", [f"out_dir={out}", "verify=true"]))
    assert sorted(p.name for p in out.iterdir()) == before
    assert dump_targets(compose("dump_targets", [f"out_dir={targets_dir}", "verify=true"]))[
        "verified"
    ]


def test_a_resumed_dump_recomputes_damaged_shards(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = _copy(targets_dir, tmp_path / "targets")
    _truncate(out / "shard_00001.probs.npy", 100)  # wrong size
    _flip_last_byte(out / "shard_00002.ids.npy")  # right size, wrong SHA-256
    _truncate(out / "shard_00003.json", 50)  # an unreadable commit marker commits nothing
    last = max(int(p.name[6:11]) for p in out.glob("shard_*.json"))
    _truncate(out / f"shard_{last:05d}.probs.npy", 100)  # the last number: reused
    summary = dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out))
    assert sorted(summary["removed_shards"]) == sorted(
        {"shard_00001", "shard_00002", "shard_00003", f"shard_{last:05d}"}
    )
    assert 0 < summary["resumed_cuts"] < summary["num_cuts"]
    _assert_same_targets(targets_dir, out)
    assert SoftTargetStore(out).verify()["verified"]
    # the index lists exactly the shards on disk, and every cut points at one of them
    index = _index(out)
    on_disk = {p.name for p in out.glob("shard_*")}
    listed = {name for entry in index["shards"].values() for name in entry["files"]}
    assert listed == on_disk
    assert {f"shard_{shard:05d}" for shard, _, _ in index["cuts"].values()} == set(index["shards"])
    assert summary["num_shards"] == len(index["shards"])


def _as_old_format(targets_dir):
    """Strip what dumps before sizes and checksums did not write."""
    for path in targets_dir.glob("shard_*.json"):
        meta = json.loads(path.read_text())
        del meta["files"]
        path.write_text(json.dumps(meta))
    index = _index(targets_dir)
    del index["shards"], index["teacher_ckpt"]
    (targets_dir / "index.json").write_text(json.dumps(index))


def test_an_old_format_store_loads_verifies_and_resumes(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = _copy(targets_dir, tmp_path / "targets")
    _as_old_format(out)
    with pytest.warns(UserWarning, match="not checked on open"):
        store = SoftTargetStore(out)
    _assert_same_targets(targets_dir, out)
    summary = store.verify()  # no checksums to compare: the arrays must load with their frames
    assert summary["verified"] and len(summary["unrecorded_shards"]) == summary["shards"] > 1
    _truncate(out / "shard_00001.probs.npy", 100)
    with pytest.warns(UserWarning):
        store = SoftTargetStore(out)  # not checked on open
    with pytest.raises(BadFileError, match=r"shard_00001\.probs\.npy does not load"):
        store.verify()
    # a resume recomputes it too, and the new index records every shard's sizes
    summary = dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out))
    assert summary["removed_shards"] == ["shard_00001"]
    _assert_same_targets(targets_dir, out)
    shards = _index(out)["shards"]
    recorded = [stem for stem, e in shards.items() if f"{stem}.probs.npy" in e["files"]]
    assert 0 < len(recorded) < len(shards)  # the recomputed ones; the old ones stay unrecorded
