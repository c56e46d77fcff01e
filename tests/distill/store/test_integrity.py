"""Store integrity: a damaged shard is named on open (sizes) or by a full check (SHA-256) with
the command that repairs it, a resumed dump recomputes it, and a store from before sizes were
recorded is refused with the dump that re-dumps it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from asr_kd.checkpoint import file_sha256
from asr_kd.config import compose
from asr_kd.distill.dump import dump_targets
from asr_kd.distill.store import SoftTargetStore, validate
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
        f"subsets=train out_dir={out} k=4 temperature=2.0 (it recomputes damaged shards)"
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


def test_a_flipped_byte_is_caught_by_the_full_check_not_the_cheap_one(tmp_path, targets_dir):
    out = _copy(targets_dir, tmp_path / "targets")
    shards = len(_index(out)["shards"])
    summary = SoftTargetStore(out).verify()
    assert summary["verified"] and summary["shards"] == shards and summary["files"] == 3 * shards
    assert summary["read_data"] and summary["bytes"] == sum(
        p.stat().st_size for p in out.glob("shard_*")
    )
    _flip_last_byte(out / "shard_00001.probs.npy")  # same size, other bytes
    store = SoftTargetStore(out)  # open only stats: the size is right
    assert len(store) == _index(out)["num_cuts"]
    assert validate(out) == {**summary, "read_data": False}
    with pytest.raises(BadFileError, match=r"shard_00001\.probs\.npy has SHA-256 [0-9a-f]{64}, "):
        store.verify()
    with pytest.raises(BadFileError, match=r"shard_00001\.probs\.npy has SHA-256 [0-9a-f]{64}, "):
        validate(out, read_data=True)
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


def _without_sizes(targets_dir, stems=None):
    """Strip what dumps before sizes and checksums did not write: from every shard's ``.json``
    (or those of ``stems``) and from the index (its ``shards`` table, or those shards' arrays)."""
    index = _index(targets_dir)
    for stem in index["shards"] if stems is None else stems:
        path = targets_dir / f"{stem}.json"
        meta = json.loads(path.read_text())
        del meta["files"]
        path.write_text(json.dumps(meta))
        own = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        index["shards"][stem]["files"] = {path.name: own}  # as write_index lists such a shard
    if stems is None:
        del index["shards"], index["teacher_ckpt"]
    (targets_dir / "index.json").write_text(json.dumps(index))


def test_a_store_from_before_sizes_is_refused_with_the_dump_that_re_dumps_it(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    # Such a store cannot be checked: its shards were trusted on open, and a truncated one
    # surfaced as numpy's EOF error at the first batch that read it.
    out = _copy(targets_dir, tmp_path / "targets")
    _without_sizes(out)
    with pytest.raises(BadFileError) as err:
        SoftTargetStore(out)
    assert str(err.value) == (
        f"soft targets in {out} predate recorded file sizes (index.json records none for its "
        "shards), so they cannot be checked; re-run asr-kd-dump-targets "
        f"teacher_ckpt={teacher_ckpt} data.dir={prepared_data_dir} subsets=train out_dir={out} "
        "k=4 temperature=2.0 (it re-dumps the shards written before sizes were recorded)"
    )
    with pytest.raises(BadFileError, match="predate recorded file sizes"):
        dump_targets(compose("dump_targets", [f"out_dir={out}", "verify=true"]))
    # that command: every shard is re-dumped, and the store is the one dumped with sizes
    summary = dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out))
    assert sorted(summary["removed_shards"]) == sorted(_index(targets_dir)["shards"])
    assert summary["resumed_cuts"] == 0
    _assert_same_targets(targets_dir, out)
    assert SoftTargetStore(out).verify()["verified"]


def test_only_the_shards_without_sizes_are_named_and_re_dumped(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = _copy(targets_dir, tmp_path / "targets")
    _without_sizes(out, ["shard_00001", "shard_00003"])
    with pytest.raises(BadFileError, match=r"records none for shard_00001, shard_00003\), "):
        SoftTargetStore(out)
    summary = dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out))
    assert sorted(summary["removed_shards"]) == ["shard_00001", "shard_00003"]
    assert 0 < summary["resumed_cuts"] < summary["num_cuts"]
    _assert_same_targets(targets_dir, out)
