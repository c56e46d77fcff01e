"""asr-kd-dump-targets and SoftTargetStore: contents, fingerprint, size, resume, refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asr_kd.checkpoint import file_sha256
from asr_kd.data.datamodule import build_datamodule
from asr_kd.distill.dump import dump_targets
from asr_kd.distill.store import SoftTargetStore, bytes_per_frame, teacher_fingerprint
from asr_kd.models.loading import load_model


def test_bytes_per_frame_at_k8_against_fp32_posteriors():
    assert bytes_per_frame(8) == 32
    assert (29 * 4) / bytes_per_frame(8) == pytest.approx(3.625)  # char
    assert (500 * 4) / bytes_per_frame(8) == pytest.approx(62.5)  # BPE-500


def test_index_carries_the_teacher_fingerprint(targets_dir, teacher_ckpt):
    teacher = load_model(teacher_ckpt)
    index = json.loads((targets_dir / "index.json").read_text())
    assert index["fingerprint"] == teacher_fingerprint(
        file_sha256(teacher_ckpt), teacher.tokenizer.fingerprint, 40.0, 4, 2.0
    )
    assert index["bytes_per_frame"] == 16
    shards = sorted(targets_dir.glob("shard_*.ids.npy"))
    assert len(shards) > 1  # shard_frames=100 splits the subset
    ids = np.concatenate([np.load(p) for p in shards])
    probs = np.concatenate([np.load(str(p).replace(".ids.", ".probs.")) for p in shards])
    assert ids.dtype == np.int16 and probs.dtype == np.float16
    assert ids.shape == probs.shape == (index["num_frames"], 4)
    assert ids.nbytes + probs.nbytes == index["num_frames"] * bytes_per_frame(4)


def test_stored_targets_are_the_teachers_top_k(targets_dir, teacher_ckpt, prepared_data_dir):
    """The stored ids and probabilities are the top-4 of softmax(log_probs / T), computed here
    independently of ``soften_teacher`` (in float64): ids exact except between genuine ties,
    probabilities to fp16 precision, sorted by decreasing probability."""
    store = SoftTargetStore(targets_dir)
    teacher = load_model(teacher_ckpt)
    cfg = json.loads((targets_dir / "index.json").read_text())
    assert cfg["data_dir"] == str(prepared_data_dir)
    dm = build_datamodule_for(prepared_data_dir)
    batch = next(iter(dm.dataloader("train", shuffle=False, max_duration=200.0)))
    with torch.no_grad():
        log_probs, lens = teacher.model(batch["feats"], batch["feat_lens"])
    full = torch.softmax(log_probs.double() / 2.0, dim=-1)  # (B, T', V) at T = 2
    want_probs, want_ids = full.topk(4, dim=-1)
    fp16 = dict(rtol=2**-10, atol=1e-6)  # fp16 storage, plus the batch's float32 noise
    frames = 0
    for b, cut_id in enumerate(batch["cut_ids"]):
        n = int(lens[b])
        got_ids, got_probs = store.get(cut_id)
        assert got_ids.shape == got_probs.shape == (n, 4)
        torch.testing.assert_close(got_probs.double(), want_probs[b, :n], **fp16)
        # an id may differ from the expected one only in a tie: where both have the same
        # probability (to fp16 precision), which also makes the stored ids a true top-4
        prob_of_stored_id = full[b, :n].gather(-1, got_ids)
        torch.testing.assert_close(prob_of_stored_id, want_probs[b, :n], **fp16)
        assert all(len(set(row)) == 4 for row in got_ids.tolist())  # 4 distinct ids
        assert (got_probs[:, :-1] >= got_probs[:, 1:]).all()  # decreasing
        frames += n
    assert frames > 100
    ids_b, probs_b, lens_b = store.batch(batch["cut_ids"], k=2)
    assert ids_b.shape[-1] == 2 and torch.equal(lens_b, lens)
    assert torch.equal(ids_b[0, : lens[0]], store.get(batch["cut_ids"][0])[0][:, :2])


def build_datamodule_for(data_dir):
    from asr_kd.config import compose

    return build_datamodule(compose("dump_targets", [f"data.dir={data_dir}"]).data)


def test_resume_after_interruption_skips_committed_shards(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    import shutil

    out = tmp_path / "targets"
    shutil.copytree(targets_dir, out)
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


def test_targets_of_another_teacher_are_refused(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    store = SoftTargetStore(targets_dir)
    expected = dict(store.fingerprint, checkpoint_sha256="0" * 64)
    with pytest.raises(ValueError, match="checkpoint_sha256") as err:
        store.check_fingerprint(expected)
    assert store.fingerprint["checkpoint_sha256"] in str(err.value) and "0" * 64 in str(err.value)
    # resuming a dump with another temperature into the same out_dir is refused too
    import shutil

    out = tmp_path / "targets"
    shutil.copytree(targets_dir, out)
    cfg = dump_targets_config(prepared_data_dir, teacher_ckpt, out, "temperature=1.0")
    with pytest.raises(ValueError, match=r"temperature: 2\.0 \(targets\) != 1\.0"):
        dump_targets(cfg)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="asr-kd-dump-targets"):
        SoftTargetStore(tmp_path)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _cuts_lines(data_dir, subset):
    import gzip

    with gzip.open(data_dir / f"cuts_{subset}.jsonl.gz", "rb") as f:
        return f.read().splitlines(keepends=True)


def _write_cuts(data_dir, subset, lines):
    import gzip

    with gzip.open(data_dir / f"cuts_{subset}.jsonl.gz", "wb") as f:
        f.writelines(lines)


def _sha256(lines):
    import hashlib

    return hashlib.sha256(b"".join(lines)).hexdigest()


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
    summary = dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subset=dev"))
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
    # subset=[train,dev] at once makes the same store; into the appended one it resumes it all
    both = tmp_path / "both"
    dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, both, "subset=[train,dev]"))
    assert SoftTargetStore(both).info["subsets"] == subsets
    again = dump_targets(
        dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subset=[train,dev]")
    )
    assert again["resumed_cuts"] == len(store)


def test_a_cut_id_already_stored_by_another_subset_is_refused(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    data = _copy(prepared_data_dir, tmp_path / "data")
    _write_cuts(data, "extra", _cuts_lines(data, "train"))  # same cut ids, another name
    out = _copy(targets_dir, tmp_path / "targets")
    with pytest.raises(ValueError, match="already has soft targets from subset 'train'"):
        dump_targets(dump_targets_config(data, teacher_ckpt, out, "subset=extra"))


def test_a_store_without_data_identity_reads_but_is_not_resumed(
    tmp_path, targets_dir, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = _copy(targets_dir, tmp_path / "targets")
    for path in [*out.glob("shard_*.json"), out / "index.json"]:  # as written before the fix
        meta = json.loads(path.read_text())
        meta.pop("data", None), meta.pop("subsets", None)
        meta.pop("files", None), meta.pop("shards", None)  # nor were sizes and checksums
        path.write_text(json.dumps(meta))
    store, cut_id = SoftTargetStore(out), next(iter(SoftTargetStore(targets_dir)._cuts))
    assert torch.equal(store.get(cut_id)[1], SoftTargetStore(targets_dir).get(cut_id)[1])
    with pytest.raises(ValueError, match="records no data identity") as err:
        dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subset=dev"))
    assert f"delete {out}" in str(err.value)


def test_a_missing_subset_in_a_list_fails_before_any_dump(
    tmp_path, teacher_ckpt, prepared_data_dir, dump_targets_config
):
    out = tmp_path / "targets"
    cfg = dump_targets_config(prepared_data_dir, teacher_ckpt, out, "subset=[dev,nosuch]")
    with pytest.raises(FileNotFoundError, match="nosuch"):
        dump_targets(cfg)
    assert not list(out.glob("shard_*"))  # dev was not dumped first
