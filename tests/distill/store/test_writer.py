"""ShardWriter and write_index: sizes and SHA-256 recorded as written, the ``.json`` commits a
shard, the index merges what is committed, a removed shard leaves nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest

import asr_kd.distill.store.writer as writer_module
from asr_kd.checkpoint import file_sha256
from asr_kd.distill.store import (
    ShardWriter,
    committed_shards,
    remove_shard,
    save_array_once,
    shard_markers,
    write_index,
)
from asr_kd.errors import BadFileError


def test_each_shard_records_its_files_as_written_and_the_index_merges_them(hand_store):
    out, index = hand_store.dir, hand_store.index
    shards = committed_shards(out)
    assert sorted(shards) == [0, 1, 2]  # 4 + 2 frames, 7, 3: committed at >= 5 frames
    for shard, meta in shards.items():
        stem = f"shard_{shard:05d}"
        assert sorted(meta["files"]) == [
            f"{stem}{x}" for x in (".hidden2.npy", ".ids.npy", ".probs.npy")
        ]
        for name, record in meta["files"].items():
            assert record == {
                "bytes": (out / name).stat().st_size,
                "sha256": file_sha256(out / name),
            }
        marker = out / f"{stem}.json"
        own = {"bytes": marker.stat().st_size, "sha256": file_sha256(marker)}
        assert index["shards"][stem] == {
            "subset": "train",
            "files": {**meta["files"], marker.name: own},
        }
    assert index["cuts"] == {
        "cut-0": [0, 0, 4], "cut-1": [0, 4, 2], "cut-2": [1, 0, 7], "cut-3": [2, 0, 3]
    }  # fmt: skip
    assert (index["num_cuts"], index["num_frames"], index["bytes_per_frame"]) == (4, 16, 12)
    assert index["subsets"] == {
        "train": {"cuts_sha256": "1" * 64, "data_dir": "DATA", "num_cuts": 4, "num_frames": 16}
    }
    assert json.loads((out / "index.json").read_text()) == index


def test_a_shard_is_committed_by_its_json_written_last(hand_store, monkeypatch):
    out = hand_store.dir
    header = json.loads((out / "shard_00000.json").read_text())
    del header["files"], header["cuts"]

    def killed(path, obj):
        raise KeyboardInterrupt(f"killed before {path.name}")

    monkeypatch.setattr(writer_module, "_write_json", killed)
    writer = ShardWriter(out, header, 3, shard_frames=100)
    ids, probs, _ = hand_store.cuts["cut-0"]
    writer.add("cut-9", ids, probs)
    with pytest.raises(KeyboardInterrupt, match="shard_00003.json"):
        writer.flush()
    assert (out / "shard_00003.ids.npy").is_file() and (out / "shard_00003.probs.npy").is_file()
    assert sorted(committed_shards(out)) == [0, 1, 2]  # arrays alone commit nothing
    monkeypatch.undo()
    assert "cut-9" not in write_index(out, header["fingerprint"], {})["cuts"]


def test_a_labelled_writer_refuses_a_cut_without_its_label(tmp_path, hand_store):
    writer = ShardWriter(tmp_path, {}, 0, shard_frames=100, labels=True)
    ids, probs, _ = hand_store.cuts["cut-0"]
    with pytest.raises(ValueError, match="cut 'cut-0' has no pseudo-label"):
        writer.add("cut-0", ids, probs)


def test_an_unreadable_marker_commits_nothing_and_is_named(hand_store):
    out = hand_store.dir
    marker = out / "shard_00001.json"
    marker.write_bytes(marker.read_bytes()[:50])
    meta, record = shard_markers(out)[1]
    assert meta is None and record["bytes"] == 50
    with pytest.raises(BadFileError) as err:
        committed_shards(out)
    assert str(err.value) == (
        f"soft targets in {out} are damaged: shard_00001.json is not a shard marker (truncated?); "
        f"re-run asr-kd-dump-targets teacher_ckpt=T.ckpt data.dir=DATA subsets=train out_dir={out} "
        "k=3 temperature=2.0 hidden_layers=[2] hidden_compress=int8 (it recomputes the cuts of "
        "unreadable shards)"
    )


def test_remove_shard_deletes_every_file_of_the_shard_and_no_other(hand_store):
    # The bug: remove_shard knew the arrays and labels by name and left a shard's stored teacher
    # layers (.hidden<L>.npy) behind, listed by no index.
    out = hand_store.dir
    before = {p.name for p in out.iterdir()}
    remove_shard(out, 1)
    assert {p.name for p in out.iterdir()} == {
        n for n in before if not n.startswith("shard_00001.")
    }
    assert sorted(committed_shards(out)) == [0, 2]


def test_save_array_once_keeps_the_first_writers_array(tmp_path):
    # Two ranks of a split dump fit the same codec; the second must encode with the first's
    # saved parameters, never replace the file the first rank's shards were encoded with.
    path = tmp_path / "hidden_codec2.int8.npy"
    first = np.arange(6, dtype=np.float32).reshape(2, 3)
    got, record = save_array_once(path, first)
    assert np.array_equal(got, first) and record["sha256"] == file_sha256(path)
    again, again_record = save_array_once(path, first + 1)
    assert np.array_equal(again, first) and np.array_equal(np.load(path), first)
    assert again_record == record
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
