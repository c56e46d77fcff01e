"""Soft targets on disk: the teacher's top-k posteriors per output frame, sharded, fingerprinted.

The format, owned here (written by :mod:`asr_kd.distill.dump`, read by :class:`SoftTargetStore`):
per cut and per output frame, the ``k`` most probable token ids (int16) and their probabilities
(fp16) at the dump's temperature (raw, not renormalised: the loss renormalises, and the residual
mass stays available for an "other" bucket). Frames of consecutive cuts are concatenated into
shards:

    <out_dir>/shard_00000.ids.npy     (N, k) int16     N = frames in the shard
    <out_dir>/shard_00000.probs.npy   (N, k) float16
    <out_dir>/shard_00000.json        {"fingerprint": {...}, "data": {"subset", "cuts_sha256",
                                      "data_dir"}, "cuts": {cut_id: [offset, num_frames]}}
    <out_dir>/index.json              {"fingerprint": {...}, "subsets": {name: {"cuts_sha256",
                                      "data_dir", "num_cuts", "num_frames"}},
                                      "cuts": {cut_id: [shard, offset, frames]}, ...}

Storage: ``k * (2 + 2)`` bytes per frame, 32 B at k = 8, against ``V * 4`` B for full fp32
posteriors (char V = 29: 116 B, 3.6x; BPE-500: 2000 B, 62.5x).

Each shard's arrays are written to temp files and renamed, then its ``.json`` is written the
same way; the ``.json`` is the commit marker. The teacher fingerprint (checkpoint SHA-256,
tokenizer fingerprint, frame shift, k, temperature) is stored with every shard and in the index;
loading targets made by another teacher is an error.

Usage:
    store = SoftTargetStore("exp/targets")
    store.check_fingerprint(teacher_fingerprint(...))
    ids, probs = store.get(cut_id)                  # (T', k) int64, (T', k) float32
    ids, probs, lens = store.batch(cut_ids)         # (B, T', k), (B, T', k), (B,)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_kd.checkpoint import atomic_write
from asr_kd.errors import ConfigError, MissingFileError

__all__ = [
    "INDEX_NAME",
    "MAX_INT16_VOCAB",
    "ShardWriter",
    "SoftTargetStore",
    "bytes_per_frame",
    "check_fingerprint",
    "committed_shards",
    "teacher_fingerprint",
    "write_index",
]

INDEX_NAME = "index.json"
MAX_INT16_VOCAB = np.iinfo(np.int16).max + 1


def bytes_per_frame(k: int) -> int:
    """Bytes stored per output frame: k int16 ids + k fp16 probabilities.

    >>> bytes_per_frame(8), 29 * 4, 500 * 4   # vs fp32 posteriors, char and BPE-500
    (32, 116, 2000)
    """
    return k * (np.dtype(np.int16).itemsize + np.dtype(np.float16).itemsize)


def teacher_fingerprint(
    checkpoint_sha256: str,
    tokenizer_fingerprint: str,
    frame_shift_ms: float,
    k: int,
    temperature: float,
) -> dict:
    """The identity of a set of soft targets: which teacher, which tokens, which frames, which k/T."""
    return {
        "checkpoint_sha256": str(checkpoint_sha256),
        "tokenizer": str(tokenizer_fingerprint),
        "frame_shift_ms": float(frame_shift_ms),
        "k": int(k),
        "temperature": float(temperature),
    }


def check_fingerprint(found: dict, expected: dict, where: str) -> None:
    """Raise ``ValueError`` naming every differing field with both values."""
    diffs = [
        f"{key}: {found.get(key)!r} (targets) != {expected.get(key)!r} (configured teacher)"
        for key in sorted(set(found) | set(expected))
        if found.get(key) != expected.get(key)
    ]
    if diffs:
        raise ConfigError(
            f"soft targets in {where} were made by another teacher: " + "; ".join(diffs)
        )


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


class SoftTargetStore:
    """Read-only access to a directory written by ``asr-kd-dump-targets`` (shards memory-mapped).

    Args:
        targets_dir: the dump's ``out_dir`` (holds ``index.json``).
    """

    def __init__(self, targets_dir: str | os.PathLike):
        self.dir = Path(targets_dir)
        index_path = self.dir / INDEX_NAME
        if not index_path.is_file():
            raise MissingFileError(
                f"no soft targets at {index_path} (expected the out_dir of a finished "
                "asr-kd-dump-targets run)"
            )
        index = json.loads(index_path.read_text())
        self.fingerprint: dict = index["fingerprint"]
        self.k: int = int(self.fingerprint["k"])
        self.temperature: float = float(self.fingerprint["temperature"])
        self.info: dict = {key: v for key, v in index.items() if key != "cuts"}
        self._cuts: dict[str, list[int]] = index["cuts"]
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._cuts)

    def __contains__(self, cut_id: str) -> bool:
        return cut_id in self._cuts

    def check_fingerprint(self, expected: dict) -> None:
        """Raise ``ValueError`` unless these targets were made by the ``expected`` teacher."""
        check_fingerprint(self.fingerprint, expected, str(self.dir / INDEX_NAME))

    def _shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._shards:
            stem = self.dir / f"shard_{shard:05d}"
            self._shards[shard] = (
                np.load(f"{stem}.ids.npy", mmap_mode="r"),
                np.load(f"{stem}.probs.npy", mmap_mode="r"),
            )
        return self._shards[shard]

    def get(self, cut_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One cut's targets: ids (T', k) int64 and probs (T', k) float32."""
        if cut_id not in self._cuts:
            raise KeyError(
                f"cut {cut_id!r} has no soft targets in {self.dir} ({len(self)} cuts dumped; "
                "expected the same subset the dump ran over)"
            )
        shard, offset, frames = self._cuts[cut_id]
        ids, probs = self._shard(shard)
        return (
            torch.from_numpy(ids[offset : offset + frames].astype(np.int64)),
            torch.from_numpy(probs[offset : offset + frames].astype(np.float32)),
        )

    def batch(
        self, cut_ids: Sequence[str], k: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Zero-padded targets of several cuts, keeping the ``k`` most probable ids (None: all).

        Returns:
            ids (B, T', k) int64, probs (B, T', k) float32, lens (B,) int64.
        """
        k = self.k if k is None else int(k)
        if k > self.k:
            raise ConfigError(f"distill.k={k} > k={self.k} stored in {self.dir / INDEX_NAME}")
        pairs = [self.get(c) for c in cut_ids]
        lens = torch.tensor([len(ids) for ids, _ in pairs], dtype=torch.int64)
        ids = torch.zeros(len(pairs), int(lens.max()), k, dtype=torch.int64)
        probs = torch.zeros(len(pairs), int(lens.max()), k, dtype=torch.float32)
        for b, (cut_ids_b, cut_probs_b) in enumerate(pairs):
            ids[b, : lens[b]] = cut_ids_b[:, :k]  # stored sorted by decreasing probability
            probs[b, : lens[b]] = cut_probs_b[:, :k]
        return ids, probs, lens


class ShardWriter:
    """Buffers cuts' targets and commits them as numbered shards of about ``shard_frames``;
    ``header`` (fingerprint and data identity) goes into every shard's ``.json``."""

    def __init__(self, out_dir: Path, header: dict, first_shard: int, shard_frames: int):
        self.out_dir, self.header = out_dir, header
        self.shard, self.shard_frames = first_shard, shard_frames
        self._ids: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []
        self._cuts: dict[str, list[int]] = {}
        self._frames = 0

    def add(self, cut_id: str, ids: np.ndarray, probs: np.ndarray) -> None:
        self._cuts[cut_id] = [self._frames, len(ids)]
        self._ids.append(ids)
        self._probs.append(probs)
        self._frames += len(ids)
        if self._frames >= self.shard_frames:
            self.flush()

    def flush(self) -> None:
        if not self._cuts:
            return
        stem = self.out_dir / f"shard_{self.shard:05d}"
        for suffix, parts in ((".ids.npy", self._ids), (".probs.npy", self._probs)):
            array = np.concatenate(parts)
            atomic_write(Path(f"{stem}{suffix}"), lambda f, a=array: np.save(f, a))
        # the .json is the commit marker: written last, so a crash before it leaves no shard
        _write_json(Path(f"{stem}.json"), {**self.header, "cuts": self._cuts})
        self.shard += 1
        self._ids, self._probs, self._cuts, self._frames = [], [], {}, 0


def committed_shards(out_dir: Path) -> dict[int, dict]:
    """Shard number -> its committed ``.json`` contents."""
    return {
        int(path.name[len("shard_") : -len(".json")]): json.loads(path.read_text())
        for path in sorted(out_dir.glob("shard_*.json"))
    }


def write_index(out_dir: Path, fingerprint: dict, extra: dict) -> dict:
    """Merge the committed shards into ``index.json`` (written atomically); return it."""
    cuts: dict[str, list[int]] = {}
    subsets: dict[str, dict] = {}
    for shard, meta in sorted(committed_shards(out_dir).items()):
        data = meta["data"]
        entry = subsets.setdefault(data["subset"], {"cuts_sha256": data["cuts_sha256"]})
        entry["data_dir"] = data["data_dir"]  # the latest (a moved data dir keeps its hash)
        for cut_id, (offset, frames) in meta["cuts"].items():
            cuts[cut_id] = [shard, offset, frames]
            entry["num_cuts"] = entry.get("num_cuts", 0) + 1
            entry["num_frames"] = entry.get("num_frames", 0) + frames
    num_frames = sum(frames for _, _, frames in cuts.values())
    index = {
        "fingerprint": fingerprint,
        **extra,
        "subsets": subsets,
        "num_cuts": len(cuts),
        "num_frames": num_frames,
        "bytes_per_frame": bytes_per_frame(fingerprint["k"]),
        "cuts": cuts,
    }
    _write_json(out_dir / INDEX_NAME, index)
    return index
