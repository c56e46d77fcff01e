"""The store's format: bytes per frame, the teacher fingerprint in the index, the data identity."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest

from asr_kd.checkpoint import file_sha256
from asr_kd.distill.store import SoftTargetStore, bytes_per_frame, teacher_fingerprint
from asr_kd.distill.store.format import data_identity
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


def test_targets_of_another_teacher_are_refused(targets_dir):
    store = SoftTargetStore(targets_dir)
    expected = dict(store.fingerprint, checkpoint_sha256="0" * 64)
    with pytest.raises(ValueError, match="checkpoint_sha256") as err:
        store.check_fingerprint(expected)
    assert store.fingerprint["checkpoint_sha256"] in str(err.value) and "0" * 64 in str(err.value)


def _write_cuts(data_dir, lines, mtime):
    with gzip.GzipFile(data_dir / "cuts_train.jsonl.gz", "wb", mtime=mtime) as f:
        f.writelines(lines)


def test_the_data_identity_hashes_the_cuts_not_the_gzip_header(tmp_path):
    lines = [b'{"id": "a"}\n', b'{"id": "b"}\n', b'{"id": "c"}\n']
    _write_cuts(tmp_path, lines, mtime=1)
    identity, num_cuts = data_identity(tmp_path, "train")
    sha = hashlib.sha256(b"".join(lines)).hexdigest()
    assert identity == {"subset": "train", "cuts_sha256": sha, "data_dir": str(tmp_path)}
    assert num_cuts == 3
    _write_cuts(tmp_path, lines, mtime=2)  # a byte-identical re-prepare: another gzip header
    assert data_identity(tmp_path, "train")[0]["cuts_sha256"] == sha
    _write_cuts(tmp_path, lines[:2], mtime=2)
    identity, num_cuts = data_identity(tmp_path, "train")
    assert (identity["cuts_sha256"], num_cuts) == (
        hashlib.sha256(b"".join(lines[:2])).hexdigest(),
        2,
    )
