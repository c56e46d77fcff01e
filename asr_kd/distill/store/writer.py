"""Writing a target store (:mod:`.format`): shards committed one at a time, then the index.

Each shard's files are written to temp files and renamed (:func:`asr_kd.checkpoint.atomic_write`),
then its ``.json`` is written the same way: the ``.json`` is the commit marker, so a kill leaves
whole shards or none. Each file's size and SHA-256 are counted as it is written (never read
back) and recorded in the ``.json``; :func:`write_index` merges the committed shards' records
into ``index.json``, adding each ``.json``'s own.

Usage:
    writer = ShardWriter(out_dir, {"fingerprint": ..., "data": ...}, first_shard, 100_000)
    writer.add(cut_id, ids, probs)      # (T', k) int16, (T', k) float16; commits every ~100k frames
    writer.flush()                      # the last, partial shard
    index = write_index(out_dir, fingerprint, {"teacher_ckpt": ..., ...})
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.checkpoint import atomic_write, file_sha256
from asr_kd.distill.store.format import (
    ARRAY_SUFFIXES,
    INDEX_NAME,
    LABELS_SUFFIX,
    MARKER_GLOB,
    MARKER_SUFFIX,
    bytes_per_frame,
    parse_json,
    shard_number,
    shard_stem,
)
from asr_kd.distill.store.integrity import redump_hint
from asr_kd.errors import BadFileError

__all__ = [
    "ShardWriter",
    "committed_shards",
    "file_record",
    "remove_shard",
    "save_array",
    "save_array_once",
    "shard_markers",
    "write_index",
]


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _record(data: bytes) -> dict:
    """The ``{"bytes", "sha256"}`` record of a file holding ``data``."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class _Tally:
    """A write-through file wrapper counting and hashing the bytes ``np.save`` writes, so a shard's
    size and SHA-256 come without reading it back."""

    def __init__(self, file):
        self.file, self.bytes, self.digest = file, 0, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        self.bytes += len(memoryview(data).cast("B"))
        return self.file.write(data)

    def record(self) -> dict:
        return {"bytes": self.bytes, "sha256": self.digest.hexdigest()}


def save_array(path: Path, array: np.ndarray) -> dict:
    """``np.save`` through :func:`atomic_write`; return the file's ``{"bytes", "sha256"}``."""
    tallies: list[_Tally] = []

    def write(f) -> None:
        tallies.append(_Tally(f))
        np.save(tallies[-1], array)

    atomic_write(path, write)
    return tallies[-1].record()


def file_record(path: Path) -> dict:
    """The ``{"bytes", "sha256"}`` record of a file already on disk (read back once)."""
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def save_array_once(path: Path, array: np.ndarray) -> tuple[np.ndarray, dict]:
    """Save ``array`` at ``path`` unless another process (a rank of a split dump) has already:
    the first writer wins, and every process returns what is on disk and its ``{"bytes",
    "sha256"}``. Exclusive by ``os.link`` (it fails on an existing name): ranks fitting a codec
    side by side all encode with the same saved parameters."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.once")
    record = save_array(tmp, array)
    try:
        os.link(tmp, path)
    except FileExistsError:
        array = np.load(path)
        record = file_record(path)
    finally:
        tmp.unlink(missing_ok=True)
    return array, record


class ShardWriter:
    """Buffers cuts' targets and commits them as numbered shards of about ``shard_frames``;
    ``header`` (fingerprint and data identity) goes into every shard's ``.json``, with the size
    and SHA-256 of each file. ``extra``: per cut, more arrays (T', ...) by file suffix (the
    stored teacher layers, :func:`~asr_kd.distill.store.format.hidden_suffix`), the same
    suffixes for every cut. With ``labels``, every cut also brings its pseudo-label (a JSON
    object, ``{"text", "confidence", "num_tokens"}``), written as the shard's ``.labels.jsonl``.
    Shards are numbered ``first_shard``, then every ``stride``-th number (one rank of a split
    dump, :class:`~asr_kd.distill.store.ranks.DumpRank`: the other ranks take the others).
    """

    def __init__(
        self,
        out_dir: Path,
        header: dict,
        first_shard: int,
        shard_frames: int,
        labels=False,
        stride: int = 1,
    ):
        self.out_dir, self.header, self.stride = out_dir, header, stride
        self.shard, self.shard_frames, self.labels = first_shard, shard_frames, labels
        self._parts: dict[str, list[np.ndarray]] = {}
        self._labels: list[dict] = []
        self._cuts: dict[str, list[int]] = {}
        self._frames = 0

    def add(
        self,
        cut_id: str,
        ids: np.ndarray,
        probs: np.ndarray,
        extra: dict[str, np.ndarray] | None = None,
        label: dict | None = None,
    ) -> None:
        """Buffer one cut: ids (T', k) int16, probs (T', k) float16; commit the shard once it
        holds ``shard_frames`` frames."""
        if self.labels and label is None:
            raise ValueError(f"cut {cut_id!r} has no pseudo-label; this writer stores them")
        self._cuts[cut_id] = [self._frames, len(ids)]
        arrays = {ARRAY_SUFFIXES[0]: ids, ARRAY_SUFFIXES[1]: probs, **(extra or {})}
        for suffix, array in arrays.items():
            self._parts.setdefault(suffix, []).append(array)
        if self.labels:
            self._labels.append({"cut_id": cut_id, **label})
        self._frames += len(ids)
        if self._frames >= self.shard_frames:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered cuts as the next shard (nothing when none is buffered)."""
        if not self._cuts:
            return
        stem = shard_stem(self.shard)
        files = {
            f"{stem}{suffix}": save_array(self.out_dir / f"{stem}{suffix}", np.concatenate(parts))
            for suffix, parts in self._parts.items()
        }
        if self.labels:
            lines = "".join(json.dumps(label) + "\n" for label in self._labels).encode()
            path = self.out_dir / f"{stem}{LABELS_SUFFIX}"
            atomic_write(path, lambda f: f.write(lines))
            files[path.name] = _record(lines)
        # the .json is the commit marker: written last, so a crash before it leaves no shard
        marker = self.out_dir / f"{stem}{MARKER_SUFFIX}"
        _write_json(marker, {**self.header, "files": files, "cuts": self._cuts})
        self.shard += self.stride
        self._parts, self._labels, self._cuts, self._frames = {}, [], {}, 0


def shard_markers(out_dir: Path) -> dict[int, tuple[dict | None, dict]]:
    """Shard number -> (its ``.json`` contents, None when unreadable: truncated, not JSON, not a
    shard marker; the ``.json``'s own ``{"bytes", "sha256"}``)."""
    markers = {}
    for path in sorted(out_dir.glob(MARKER_GLOB)):
        raw = path.read_bytes()
        meta = parse_json(raw)
        if meta is not None and not {"fingerprint", "cuts"} <= set(meta):
            meta = None
        markers[shard_number(path)] = (meta, _record(raw))
    return markers


def _committed(out_dir: Path) -> dict[int, tuple[dict, dict]]:
    """:func:`shard_markers`, raising ``BadFileError`` naming an unreadable one."""
    markers = shard_markers(out_dir)
    for shard, (meta, _) in markers.items():
        if meta is None:
            raise BadFileError(
                f"soft targets in {out_dir} are damaged: {shard_stem(shard)}{MARKER_SUFFIX} is not "
                "a shard marker (truncated?); "
                + redump_hint(out_dir, fixes="it recomputes the cuts of unreadable shards")
            )
    return markers  # type: ignore[return-value]


def committed_shards(out_dir: Path) -> dict[int, dict]:
    """Shard number -> its committed ``.json`` contents; ``BadFileError`` naming an unreadable
    one (a resumed dump removes those first: an unreadable marker commits nothing)."""
    return {shard: meta for shard, (meta, _) in _committed(out_dir).items()}


def remove_shard(out_dir: Path, shard: int) -> None:
    """Delete a shard: its ``.json`` first (uncommitting it), then every other file of it."""
    stem = shard_stem(shard)
    (out_dir / f"{stem}{MARKER_SUFFIX}").unlink(missing_ok=True)
    for path in list(out_dir.glob(f"{stem}.*")):  # arrays, stored layers, labels
        path.unlink(missing_ok=True)  # another rank of a split dump may remove it first


def write_index(out_dir: Path, fingerprint: dict, extra: dict) -> dict:
    """Merge the committed shards into ``index.json`` (written atomically); return it."""
    cuts: dict[str, list[int]] = {}
    subsets: dict[str, dict] = {}
    shards: dict[str, dict] = {}
    labels: dict = {}  # {"confidence", "num_cuts"} over the shards holding pseudo-labels
    for shard, (meta, record) in sorted(_committed(out_dir).items()):
        data = meta["data"]
        stem = shard_stem(shard)
        # a marker without sizes (written before they were) is listed without them: opening the
        # store then refuses it, naming the dump that re-dumps it
        files = {**meta.get("files", {}), f"{stem}{MARKER_SUFFIX}": record}
        shards[stem] = {"subset": data["subset"], "files": files}
        if f"{stem}{LABELS_SUFFIX}" in files:
            labels["confidence"] = meta["pseudo_labels"]["confidence"]
            labels["num_cuts"] = labels.get("num_cuts", 0) + len(meta["cuts"])
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
        **({"pseudo_labels": labels} if labels else {}),
        "shards": shards,
        "cuts": cuts,
    }
    _write_json(out_dir / INDEX_NAME, index)
    return index
