"""asr-kd-dump-targets: resume, several subsets in one store, a dump split over ranks, and what
it refuses."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from asr_kd.distill.dump import HiddenDump, dump_targets
from asr_kd.distill.store import CodecStats, SoftTargetStore, encode_hidden, fit_codec, validate
from asr_kd.errors import BadFileError, ConfigError
from tests.helpers.console import REPO


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _cuts_lines(data_dir, subset):
    with gzip.open(data_dir / f"cuts_{subset}.jsonl.gz", "rb") as f:
        return f.read().splitlines(keepends=True)


def _write_cuts(data_dir, subset, lines):
    with gzip.open(data_dir / f"cuts_{subset}.jsonl.gz", "wb") as f:
        f.writelines(lines)


def _sha256(lines):
    return hashlib.sha256(b"".join(lines)).hexdigest()


def test_resume_after_interruption_skips_committed_shards(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = _copy(targets_dir, tmp_path / "targets")
    # simulate a kill during the third shard: later shards and the index never written,
    # a half-written temp file left behind
    for path in out.glob("shard_*"):
        if int(path.name[6:11]) >= 2:
            path.unlink()
    (out / "index.json").unlink()
    (out / ".shard_00002.ids.npy.tmp123").write_bytes(b"partial")
    summary = dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out))
    assert summary["resumed_cuts"] > 0
    full, resumed = SoftTargetStore(targets_dir), SoftTargetStore(out)
    assert len(full) == len(resumed) == summary["num_cuts"]
    for cut_id in list(full._cuts)[:: max(1, len(full) // 10)]:
        for a, b in zip(full.get(cut_id), resumed.get(cut_id), strict=True):
            assert torch.equal(a, b)


def test_resuming_with_another_teacher_is_refused(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = _copy(targets_dir, tmp_path / "targets")
    cfg = dump_targets_config(prepared_data_dir, teacher_ckpt, out, "temperature=1.0")
    with pytest.raises(ValueError, match=r"temperature: 2\.0 \(targets\) != 1\.0"):
        dump_targets(cfg)


def test_resume_after_the_data_dir_was_re_prepared_is_refused(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    # The bug: the fingerprint named the teacher, not the data, so a resumed dump kept the old
    # shards of cuts whose features had changed under the same ids and mixed them with new ones.
    data = _copy(prepared_data_dir, tmp_path / "data")
    lines = _cuts_lines(data, "train")
    _write_cuts(data, "train", lines[:-1])  # re-prepared: other cuts under the same subset name
    out = _copy(targets_dir, tmp_path / "targets")
    old_sha = json.loads((out / "index.json").read_text())["subsets"]["train"]["cuts_sha256"]
    assert old_sha == _sha256(lines)
    with pytest.raises(ValueError, match="re-prepared") as err:
        dump_targets(dump_targets_config(data, teacher_ckpt, out))
    message = str(err.value)
    for part in (str(out), "'train'", old_sha, _sha256(lines[:-1]), f"delete {out}"):
        assert part in message
    # the same cuts in a moved (copied) data dir hash the same and resume
    _write_cuts(data, "train", lines)
    summary = dump_targets(dump_targets_config(data, teacher_ckpt, out))
    assert summary["resumed_cuts"] == summary["num_cuts"] == len(lines)


def test_a_second_subset_appends_and_both_are_readable(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    train = SoftTargetStore(targets_dir)
    out = _copy(targets_dir, tmp_path / "targets")
    summary = dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subsets=dev"))
    dev_lines = _cuts_lines(prepared_data_dir, "dev")
    assert summary["resumed_cuts"] == 0  # another subset: nothing of it was in the store
    store = SoftTargetStore(out)
    assert len(store) == len(train) + len(dev_lines)
    for cut_id in train._cuts:
        for a, b in zip(train.get(cut_id), store.get(cut_id), strict=True):
            assert torch.equal(a, b)
    dev_ids = [json.loads(line)["id"] for line in dev_lines]
    assert all(store.get(c)[0].shape[1] == 4 for c in dev_ids)
    subsets = store.info["subsets"]
    assert sorted(subsets) == ["dev", "train"]
    for name in ("train", "dev"):
        lines = _cuts_lines(prepared_data_dir, name)
        assert subsets[name]["cuts_sha256"] == _sha256(lines)
        assert subsets[name]["num_cuts"] == len(lines)
        assert subsets[name]["data_dir"] == str(prepared_data_dir)
    assert sum(s["num_frames"] for s in subsets.values()) == store.info["num_frames"]
    # subsets=[train,dev] at once makes the same store; into the appended one it resumes it all
    both = tmp_path / "both"
    dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, both, "subsets=[train,dev]"))
    assert SoftTargetStore(both).info["subsets"] == subsets
    again = dump_targets(
        dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subsets=[train,dev]")
    )
    assert again["resumed_cuts"] == len(store)


def test_a_cut_id_already_stored_by_another_subset_is_refused(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    data = _copy(prepared_data_dir, tmp_path / "data")
    _write_cuts(data, "extra", _cuts_lines(data, "train"))  # same cut ids, another name
    out = _copy(targets_dir, tmp_path / "targets")
    with pytest.raises(ValueError, match="already has soft targets from subset 'train'"):
        dump_targets(dump_targets_config(data, teacher_ckpt, out, "subsets=extra"))


def test_a_store_without_data_identity_is_not_resumed(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = _copy(targets_dir, tmp_path / "targets")
    for path in [*out.glob("shard_*.json"), out / "index.json"]:  # as written before the fix
        meta = json.loads(path.read_text())
        meta.pop("data", None), meta.pop("subsets", None)
        meta.pop("files", None), meta.pop("shards", None)  # nor were sizes and checksums
        path.write_text(json.dumps(meta))
    with pytest.raises(BadFileError, match="predate recorded file sizes"):
        SoftTargetStore(out)
    with pytest.raises(ValueError, match="records no data identity") as err:
        dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subsets=dev"))
    assert f"delete {out}" in str(err.value)


def test_a_missing_subset_in_a_list_fails_before_any_dump(
    tmp_path, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = tmp_path / "targets"
    cfg = dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subsets=[dev,nosuch]")
    with pytest.raises(FileNotFoundError, match="nosuch"):
        dump_targets(cfg)
    assert not list(out.glob("shard_*"))  # dev was not dumped first


def _same_targets(a: SoftTargetStore, b: SoftTargetStore) -> None:
    """The same cuts, token ids and lengths; probabilities and layers within fp16 rounding: a
    cut padded in another batch shape goes through other matmul blockings (docs/results.md: on
    the demo's teacher, 8 of 89,466 frames' probabilities moved by at most 7.6e-6)."""
    assert sorted(a._cuts) == sorted(b._cuts)
    for cut_id in a._cuts:
        for x, y in zip(a.get(cut_id), b.get(cut_id), strict=True):
            if x.is_floating_point():
                torch.testing.assert_close(x, y, rtol=0, atol=2e-3, msg=cut_id)
            else:
                assert torch.equal(x, y), cut_id


def _dump_rank(config, data_dir, teacher_ckpt, out, rank, *overrides):
    return dump_targets(
        config(data_dir, teacher_ckpt, out, "world_size=2", f"rank={rank}", *overrides)
    )


def test_two_ranks_dump_the_same_targets_as_one_process_and_the_last_merges(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = tmp_path / "targets"
    first = _dump_rank(dump_targets_config, prepared_data_dir, teacher_ckpt, out, 1)
    assert not first["merged"] and not (out / "index.json").exists()
    cuts = len(_cuts_lines(prepared_data_dir, "train"))
    assert 0 < first["missing_cuts"]["train"] < cuts  # rank 0's cuts: neither none nor all
    odd = sorted(int(p.name[6:11]) for p in out.glob("shard_*.json"))
    assert odd and all(n % 2 == 1 for n in odd)  # rank 1 of 2: odd shard numbers
    summary = _dump_rank(dump_targets_config, prepared_data_dir, teacher_ckpt, out, 0)
    assert summary["num_cuts"] == cuts  # the last rank merged the index
    even = sorted(int(p.name[6:11]) for p in out.glob("shard_*.json") if int(p.name[6:11]) % 2 == 0)
    assert even and validate(out, read_data=True)["shards"] == len(odd) + len(even)
    _same_targets(SoftTargetStore(targets_dir), SoftTargetStore(out))


def test_a_stopped_rank_resumes_and_merge_names_what_is_missing(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = tmp_path / "targets"
    _dump_rank(dump_targets_config, prepared_data_dir, teacher_ckpt, out, 0)
    _dump_rank(dump_targets_config, prepared_data_dir, teacher_ckpt, out, 1)
    # rank 1 killed during its last shard: its .json never written, so the shard is not there
    last = max(int(p.name[6:11]) for p in out.glob("shard_*.json"))
    assert last % 2 == 1
    (out / f"shard_{last:05d}.json").unlink()
    (out / "index.json").unlink()
    with pytest.raises(ConfigError, match=r"cannot merge .*: \d+ of \d+ cuts of 'train' are in no"):
        dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out, "merge=true"))
    assert not (out / "index.json").exists()
    again = _dump_rank(dump_targets_config, prepared_data_dir, teacher_ckpt, out, 1)
    assert 0 < again["resumed_cuts"] < again["num_cuts"]  # rank 1's committed shards kept
    validate(out, read_data=True)
    _same_targets(SoftTargetStore(targets_dir), SoftTargetStore(out))
    (out / "index.json").unlink()
    merged = dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out, "merge=true"))
    assert merged["num_cuts"] == again["num_cuts"] and merged["throughput"] == {}


def test_a_rank_outside_the_world_is_refused(
    tmp_path, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    cfg = dump_targets_config(prepared_data_dir, teacher_ckpt, tmp_path, "world_size=2", "rank=2")
    with pytest.raises(
        ConfigError, match=r"rank=2 of world_size=2, expected .* 0 <= rank < world_size"
    ):
        dump_targets(cfg)


def test_a_bf16_dump_records_its_precision_and_another_precision_does_not_resume(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = tmp_path / "bf16"
    dump_targets(
        dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subsets=dev", "bf16=true")
    )
    store = SoftTargetStore(out)
    assert store.info["precision"] == "bf16"
    assert all(json.loads(p.read_text())["precision"] == "bf16" for p in out.glob("shard_*.json"))
    with pytest.raises(BadFileError, match=r"dumped in bf16, this dump runs in fp32"):
        dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subsets=dev"))
    fp32 = _copy(targets_dir, tmp_path / "fp32")  # an fp32 store records no precision
    assert "precision" not in SoftTargetStore(fp32).info
    with pytest.raises(BadFileError, match=r"dumped in fp32, this dump runs in bf16"):
        dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, fp32, "bf16=true"))


@pytest.mark.parametrize("compress", ["none", "int8", "pca4"])
def test_stored_layers_coded_per_batch_are_each_cuts_own_codes(compress):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 9, 8, generator=generator) * 2 + 1  # (B, T', D): a padded batch
    stats = CodecStats(8)
    stats.update(hidden.reshape(-1, 8).numpy())
    spec = HiddenDump(
        (2, 4), compress, {2: fit_codec(compress, stats), 4: fit_codec(compress, stats)}
    )
    lens = [9, 4, 1]
    coded = spec.encode((hidden, -hidden), lens)
    assert len(coded) == 3
    for b, frames in enumerate(lens):
        for suffix, layer in ((".hidden2.npy", hidden), (".hidden4.npy", -hidden)):
            alone = encode_hidden(compress, spec.params[2], layer[b, :frames].numpy())
            got = coded[b][suffix]
            assert got.shape == alone.shape and got.dtype == alone.dtype
            # pca's matrix product may round one fp16 unit apart on another batch shape
            np.testing.assert_allclose(got.astype(np.float32), alone.astype(np.float32), rtol=1e-3)


@pytest.mark.slow
def test_two_rank_processes_side_by_side_from_torchruns_environment(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir
):
    # What a user runs: two processes at once, WORLD_SIZE/RANK in the environment (torchrun's),
    # both fitting the int8 codec of a stored layer; no shard number or codec file collides.
    out = tmp_path / "targets"
    args = [f"teacher_ckpt={teacher_ckpt}", f"data.dir={prepared_data_dir}", f"out_dir={out}"]
    args += ["subsets=train", "k=4", "temperature=2.0", "shard_frames=100", "device=cpu"]
    args += ["hidden_layers=[1]", "hidden_compress=int8", "hidden_fit_frames=50"]
    command = [sys.executable, "-m", "asr_kd.cli.dump_targets", *args]
    env = dict(os.environ, PYTHONPATH=str(REPO), WORLD_SIZE="2", OMP_NUM_THREADS="1")
    ranks = [
        subprocess.Popen(command, env={**env, "RANK": str(r)}, cwd=tmp_path, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for r in (0, 1)
    ]  # fmt: skip
    for rank, proc in enumerate(ranks):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert f"dump train (rank {rank} of 2)" in err  # its progress bar: the split it took
    validate(out, read_data=True)
    store = SoftTargetStore(out)
    codecs = {json.loads(p.read_text())["codec_sha256"]["hidden_codec1.int8.npy"]
              for p in out.glob("shard_*.json")}  # fmt: skip
    assert codecs == {store.info["hidden"]["codec_files"]["hidden_codec1.int8.npy"]["sha256"]}
    numbers = sorted(int(p.name[6:11]) for p in out.glob("shard_*.json"))
    assert {n % 2 for n in numbers} == {0, 1}
    _same_targets(SoftTargetStore(targets_dir), store)
