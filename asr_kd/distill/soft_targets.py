"""Soft targets on disk: the teacher's top-k posteriors per output frame, sharded, fingerprinted.

``asr-kd-dump-targets`` runs a teacher checkpoint over prepared subsets (batched, no grad)
and stores, per cut and per output frame, the ``k`` most probable token ids (int16) and their
probabilities (fp16) at ``temperature`` (raw, not renormalised: the loss renormalises, and the
residual mass stays available for an "other" bucket). Frames of consecutive cuts are
concatenated into shards:

    <out_dir>/shard_00000.ids.npy     (N, k) int16     N = frames in the shard
    <out_dir>/shard_00000.probs.npy   (N, k) float16
    <out_dir>/shard_00000.json        {"fingerprint": {...}, "data": {"subset", "cuts_sha256",
                                      "data_dir"}, "cuts": {cut_id: [offset, num_frames]}}
    <out_dir>/index.json              {"fingerprint": {...}, "subsets": {name: {"cuts_sha256",
                                      "data_dir", "num_cuts", "num_frames"}},
                                      "cuts": {cut_id: [shard, offset, frames]}, ...}

Storage: ``k * (2 + 2)`` bytes per frame, 32 B at k = 8, against ``V * 4`` B for full fp32
posteriors (char V = 29: 116 B, 3.6x; BPE-500: 2000 B, 62.5x).

Resumable: each shard's arrays are written to temp files and renamed, then its ``.json`` is
written the same way; the ``.json`` is the commit marker. A restart skips the cuts of committed
shards (their batches are not even run through the teacher) and rewrites ``index.json`` at the
end. The teacher fingerprint (checkpoint SHA-256, tokenizer fingerprint, frame shift, k,
temperature) is stored with every shard; resuming or loading with another teacher is an error.

One store may hold several subsets (``subset=train``, then ``subset=extra``, or
``subset=[train,extra]``): each shard records its data identity, the subset name and the SHA-256
of the decompressed ``cuts_<subset>.jsonl.gz``. Resuming a subset whose cuts file changed since
(a re-prepared data dir: other features under the same cut ids) is an error, as is resuming into
a store written before data identities were recorded; another subset appends. Cut ids must be
unique across the subsets of one store (the store is keyed by cut id).

Usage:
    asr-kd-dump-targets teacher_ckpt=exp/teacher/checkpoints/last.ckpt data.dir=DATA \\
        subset=train out_dir=exp/targets k=8 temperature=2.0
    asr-kd-dump-targets ... subset=[train,extra]    # two subsets, one store

    store = SoftTargetStore("exp/targets")
    store.check_fingerprint(teacher_fingerprint(...))
    ids, probs = store.get(cut_id)                  # (T', k) int64, (T', k) float32
    ids, probs, lens = store.batch(cut_ids)         # (B, T', k), (B, T', k), (B,)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from asr_kd.checkpoint import atomic_write, file_sha256, load_model
from asr_kd.config import CONF_DIR, as_list
from asr_kd.distill.losses import soften_teacher
from asr_kd.train import build_datamodule, resolve_device, save_config

__all__ = [
    "SoftTargetStore",
    "bytes_per_frame",
    "check_fingerprint",
    "dump_targets",
    "main",
    "teacher_fingerprint",
]

INDEX_NAME = "index.json"
_MAX_INT16_VOCAB = np.iinfo(np.int16).max + 1


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
        raise ValueError(
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
            raise FileNotFoundError(
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
            raise ValueError(f"distill.k={k} > k={self.k} stored in {self.dir / INDEX_NAME}")
        pairs = [self.get(c) for c in cut_ids]
        lens = torch.tensor([len(ids) for ids, _ in pairs], dtype=torch.int64)
        ids = torch.zeros(len(pairs), int(lens.max()), k, dtype=torch.int64)
        probs = torch.zeros(len(pairs), int(lens.max()), k, dtype=torch.float32)
        for b, (cut_ids_b, cut_probs_b) in enumerate(pairs):
            ids[b, : lens[b]] = cut_ids_b[:, :k]  # stored sorted by decreasing probability
            probs[b, : lens[b]] = cut_probs_b[:, :k]
        return ids, probs, lens


class _ShardWriter:
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


def _committed_shards(out_dir: Path) -> dict[int, dict]:
    """Shard number -> its committed ``.json`` contents."""
    return {
        int(path.name[len("shard_") : -len(".json")]): json.loads(path.read_text())
        for path in sorted(out_dir.glob("shard_*.json"))
    }


def _write_index(out_dir: Path, fingerprint: dict, extra: dict) -> dict:
    """Merge the committed shards into ``index.json`` (written atomically); return it."""
    cuts: dict[str, list[int]] = {}
    subsets: dict[str, dict] = {}
    for shard, meta in sorted(_committed_shards(out_dir).items()):
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


def _teacher_batches(
    model, batches: Iterable[dict], done: set[str], device, k: int, temperature: float
):
    """Per batch, yield (cuts in the batch, [(cut_id, ids (T', k) int16, probs (T', k) fp16)])
    for the cuts not in ``done``; a batch whose cuts are all done is not run."""
    for batch in batches:
        todo = [i for i, cut_id in enumerate(batch["cut_ids"]) if cut_id not in done]
        if not todo:
            yield len(batch["cut_ids"]), []
            continue
        with torch.inference_mode():
            log_probs, out_lens = model(batch["feats"].to(device), batch["feat_lens"].to(device))
            ids, probs = soften_teacher(log_probs, temperature, k)
        ids = ids.to(torch.int16).cpu().numpy()
        probs = probs.to(torch.float16).cpu().numpy()
        lens = out_lens.cpu().tolist()
        records = [(batch["cut_ids"][i], ids[i, : lens[i]], probs[i, : lens[i]]) for i in todo]
        yield len(batch["cut_ids"]), records


def _data_identity(data_dir: Path, subset: str) -> tuple[dict, int]:
    """``({"subset", "cuts_sha256", "data_dir"}, number of cuts)`` of ``cuts_<subset>.jsonl.gz``.

    The hash is of the decompressed JSON lines: a gzip header carries a timestamp, so hashing the
    file itself would make a byte-identical re-prepare look like new data.
    """
    digest, num_cuts = hashlib.sha256(), 0
    with gzip.open(data_dir / f"cuts_{subset}.jsonl.gz", "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            num_cuts += block.count(b"\n")  # one cut per line
    identity = {"subset": subset, "cuts_sha256": digest.hexdigest(), "data_dir": str(data_dir)}
    return identity, num_cuts


def _resume_state(
    out_dir: Path, fingerprint: dict, data: dict
) -> tuple[int, set[str], dict[str, str]]:
    """(next shard number, cuts of ``data["subset"]`` already committed, cut id -> subset of the
    other subsets' cuts) after checking the committed shards: another teacher, unknown data (a
    store written before data identities) or other cuts under this subset's name are errors."""
    committed = _committed_shards(out_dir)
    done: set[str] = set()
    taken: dict[str, str] = {}
    redo = f"delete {out_dir} to dump again, or use another out_dir"
    for shard, meta in committed.items():
        where = out_dir / f"shard_{shard:05d}.json"
        check_fingerprint(meta["fingerprint"], fingerprint, str(where))
        stored = meta.get("data")
        if stored is None:
            raise ValueError(
                f"cannot resume subset={data['subset']} into {out_dir}: {where} records no data "
                "identity (written before asr-kd-dump-targets hashed the cuts), so its targets "
                f"may come from other features under the same cut ids; {redo} (the store "
                "still reads fine for distillation)"
            )
        if stored["subset"] != data["subset"]:
            taken.update(dict.fromkeys(meta["cuts"], stored["subset"]))
        elif stored["cuts_sha256"] != data["cuts_sha256"]:
            raise ValueError(
                f"subset {data['subset']!r} in {out_dir} was dumped from other cuts: cuts_sha256 "
                f"{stored['cuts_sha256']} ({stored['data_dir']}, {where}) != "
                f"{data['cuts_sha256']} ({data['data_dir']}/cuts_{data['subset']}.jsonl.gz); "
                f"the data dir was re-prepared since, expected the same cuts; {redo}"
            )
        else:
            done.update(meta["cuts"])
    return max(committed, default=-1) + 1, done, taken


def _dump_subset(
    cfg: DictConfig, dm, model, fingerprint: dict, data: dict, total: int | None
) -> int:
    """Append the soft targets of subset ``data["subset"]`` (``data``, ``total``: from
    ``_data_identity``) to the store in ``cfg.out_dir``; return the cuts resumed."""
    out_dir, k, subset = Path(cfg.out_dir), fingerprint["k"], data["subset"]
    batches = dm.dataloader(subset, shuffle=False, max_duration=cfg.max_duration)
    first_shard, done, taken = _resume_state(out_dir, fingerprint, data)
    header = {"fingerprint": fingerprint, "data": data}
    writer = _ShardWriter(out_dir, header, first_shard, cfg.shard_frames)
    device = next(model.parameters()).device
    with tqdm(total=total, unit="cut", desc=f"dump {subset}") as progress:
        for num_cuts, records in _teacher_batches(model, batches, done, device, k, cfg.temperature):
            for cut_id, ids, probs in records:
                if cut_id in taken:
                    raise ValueError(
                        f"cut {cut_id!r} of subset {subset!r} already has soft targets from "
                        f"subset {taken[cut_id]!r} in {out_dir}; expected cut ids unique across "
                        "the subsets of one store"
                    )
                writer.add(cut_id, ids, probs)
            progress.update(num_cuts)
    writer.flush()
    return len(done)


def _subset_names(subset: str | Sequence[str]) -> list[str]:
    """``subset=train`` or ``subset=[train,extra]`` -> the names, in order, without repeats."""
    names = [str(s) for s in as_list(subset)]
    if not names:
        raise ValueError("subset=[] names no subset to dump; expected a name or a list of names")
    return names


def dump_targets(cfg: DictConfig) -> dict:
    """Dump the teacher's soft targets for ``cfg.subset`` (a name or a list) into ``cfg.out_dir``;
    return the summary of the whole store."""
    out_dir = Path(cfg.out_dir)
    save_config(cfg, out_dir)
    device = resolve_device(cfg.device)
    teacher = load_model(cfg.teacher_ckpt)
    vocab = teacher.tokenizer.vocab_size
    if vocab > _MAX_INT16_VOCAB:
        raise ValueError(f"vocab {vocab} does not fit int16 ids (max {_MAX_INT16_VOCAB})")
    k = min(int(cfg.k), vocab)
    fingerprint = teacher_fingerprint(
        file_sha256(cfg.teacher_ckpt),
        teacher.tokenizer.fingerprint,
        teacher.model.frame_shift_ms,
        k,
        float(cfg.temperature),
    )
    dm = build_datamodule(cfg.data)
    if dm.tokenizer.fingerprint != teacher.tokenizer.fingerprint:
        raise ValueError(
            f"tokenizer of {cfg.data.dir} ({dm.tokenizer.fingerprint}, vocab "
            f"{dm.tokenizer.vocab_size}) != teacher's ({teacher.tokenizer.fingerprint}, vocab "
            f"{vocab}) in {cfg.teacher_ckpt}"
        )
    # Every subset's identity first: a missing or re-prepared one fails now, not after hours.
    identities = [_data_identity(Path(cfg.data.dir), s) for s in _subset_names(cfg.subset)]
    for data, _ in identities:
        _resume_state(out_dir, fingerprint, data)
    model = teacher.model.to(device)
    resumed = 0
    for data, total in identities:
        subset = data["subset"]
        resumed += _dump_subset(cfg, dm, model, fingerprint, data, total)
        # "subset"/"data_dir" name the latest dump (as before); "subsets" lists every one
        extra = {"subset": subset, "data_dir": str(cfg.data.dir), "vocab_size": vocab}
        index = _write_index(out_dir, fingerprint, extra)
    summary = {k_: v for k_, v in index.items() if k_ != "cuts"}
    summary["resumed_cuts"] = resumed
    summary["fp32_bytes_per_frame"] = 4 * vocab
    return summary


run = dump_targets


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="dump_targets")
def main(cfg: DictConfig) -> None:
    """Console script ``asr-kd-dump-targets``."""
    print(json.dumps(dump_targets(cfg), indent=1))
