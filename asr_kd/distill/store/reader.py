"""Read-only access to a target store (:mod:`.format`), checked on open (:mod:`.integrity`).

Usage:
    store = SoftTargetStore("exp/targets")          # BadFileError / MissingFileError if damaged
    store.check_fingerprint(teacher_fingerprint(...))
    ids, probs = store.get(cut_id)                  # (T', k) int64, (T', k) float32
    ids, probs, lens = store.batch(cut_ids)         # (B, T', k), (B, T', k), (B,)
    hidden = store.hidden(cut_ids, [4])             # ((B, T', D_t) float32,) decoded
    stored = store.decode_batch(cut_ids, k=4, layers=[4])   # all of it: a data-loader worker's job
    store.pseudo_labels()                           # {cut_id: {"text", "confidence", ...}}
    store.verify()                                  # every SHA-256 too; raises naming bad files
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from asr_kd.distill.store.codecs import decode_hidden
from asr_kd.distill.store.format import (
    ARRAY_SUFFIXES,
    INDEX_NAME,
    LABELS_SUFFIX,
    check_fingerprint,
    codec_name,
    hidden_suffix,
    shard_stem,
)
from asr_kd.distill.store.integrity import read_index, redump_hint, validate
from asr_kd.errors import BadFileError, ConfigError

__all__ = ["SoftTargetStore", "StoredBatch"]


class StoredBatch(NamedTuple):
    """One batch of stored targets, decoded (:meth:`SoftTargetStore.decode_batch`); B cuts,
    T' their longest frame count, zero-padded."""

    ids: torch.Tensor  # (B, T', k) int64, by decreasing probability
    probs: torch.Tensor  # (B, T', k) float32
    lens: torch.Tensor  # (B,) int64
    hidden: tuple[torch.Tensor, ...]  # per asked teacher layer, (B, T', D_t) float32


class SoftTargetStore:
    """Read-only access to a directory written by ``asr-kd-dump-targets`` (shards memory-mapped).

    Opening it reads ``index.json`` and stats every shard file it lists
    (:func:`~asr_kd.distill.store.integrity.validate`, ``read_data=False``): a damaged store
    raises :class:`~asr_kd.errors.BadFileError` (:class:`~asr_kd.errors.MissingFileError` when
    all the bad files are absent) naming them and the dump that repairs them; :meth:`verify`
    also compares their SHA-256.

    Args:
        targets_dir: the dump's ``out_dir`` (holds ``index.json``).
    """

    def __init__(self, targets_dir: str | os.PathLike):
        self.dir = Path(targets_dir)
        self._index = read_index(self.dir)
        validate(self.dir, index=self._index)
        self.fingerprint: dict = self._index["fingerprint"]
        self.k: int = int(self.fingerprint["k"])
        self.temperature: float = float(self.fingerprint["temperature"])
        self.info: dict = {k: v for k, v in self._index.items() if k not in ("cuts", "shards")}
        self._cuts: dict[str, list[int]] = self._index["cuts"]
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # stored teacher layers (hidden-state KD): {"dims": {layer: D}, "codec_files": {...}}
        self.hidden_layers: tuple[int, ...] = tuple(self.fingerprint.get("hidden_layers", ()))
        self.hidden_compress: str = str(self.fingerprint.get("hidden_compress", "none"))
        self._hidden: dict = self._index.get("hidden") or {}
        self._hidden_arrays: dict[tuple[int, int], np.ndarray] = {}
        self._codecs: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._cuts)

    def __getstate__(self) -> dict:
        """Pickled (into data-loader workers) without its memory maps: pickling a map copies
        the whole shard; each process maps the shards it reads itself."""
        state = self.__dict__.copy()
        state.update(_shards={}, _hidden_arrays={}, _codecs={})
        return state

    def __contains__(self, cut_id: str) -> bool:
        return cut_id in self._cuts

    def verify(self) -> dict:
        """Read every file: sizes and SHA-256 against ``index.json``. Raise naming every bad file
        (as on open); return ``{"out_dir", "verified": True, "read_data": True, "shards",
        "files", "bytes"}``."""
        return validate(self.dir, read_data=True, index=self._index)

    def pseudo_labels(self) -> dict[str, dict]:
        """Cut id -> ``{"text", "confidence", "num_tokens"}`` from every shard holding labels
        (``asr-kd-dump-targets pseudo_labels=true``); {} when none does. A labels file that does
        not parse, or does not list exactly its shard's cuts, is a ``BadFileError``."""
        labels: dict[str, dict] = {}
        for stem, entry in self._index["shards"].items():
            name = f"{stem}{LABELS_SUFFIX}"
            if name not in entry["files"]:
                continue
            try:
                rows = [json.loads(line) for line in (self.dir / name).read_text().splitlines()]
                shard_labels = {row.pop("cut_id"): row for row in rows}
            except (ValueError, KeyError, AttributeError, TypeError):
                shard_labels = None
            expected = {c for c, (s, _, _) in self._cuts.items() if shard_stem(s) == stem}
            if shard_labels is None or set(shard_labels) != expected:
                raise BadFileError(
                    f"soft targets in {self.dir} are damaged: {name} does not hold one JSON line "
                    f"per cut of {stem}; "
                    + redump_hint(
                        self.dir, [entry["subset"]] * bool(entry.get("subset")), index=self.info
                    )
                )
            labels.update(shard_labels)
        return labels

    def check_fingerprint(self, expected: dict) -> None:
        """Raise ``ValueError`` unless these targets were made by the ``expected`` teacher."""
        check_fingerprint(self.fingerprint, expected, str(self.dir / INDEX_NAME))

    def _shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._shards:
            stem = self.dir / shard_stem(shard)
            ids, probs = (np.load(f"{stem}{x}", mmap_mode="r") for x in ARRAY_SUFFIXES)
            self._shards[shard] = ids, probs
        return self._shards[shard]

    def _entry(self, cut_id: str) -> list[int]:
        """``[shard, offset, frames]`` of a cut; KeyError naming the store if it has none."""
        if cut_id not in self._cuts:
            raise KeyError(
                f"cut {cut_id!r} has no soft targets in {self.dir} ({len(self)} cuts dumped; "
                "expected the same subset the dump ran over)"
            )
        return self._cuts[cut_id]

    def get(self, cut_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One cut's targets: ids (T', k) int64 and probs (T', k) float32."""
        shard, offset, frames = self._entry(cut_id)
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

    def decode_batch(
        self, cut_ids: Sequence[str], k: int | None = None, layers: Sequence[int] = ()
    ) -> StoredBatch:
        """Everything stored for a batch of cuts, read and decoded on the CPU: :meth:`batch`
        (``k`` most probable ids) and :meth:`hidden` of ``layers``. Meant for a data-loader
        worker (the store pickles without its maps), so the training loop only moves the
        tensors to its device."""
        ids, probs, lens = self.batch(cut_ids, k)
        hidden = self.hidden(cut_ids, layers) if layers else ()
        return StoredBatch(ids, probs, lens, hidden)

    def hidden_dim(self, layer: int) -> int:
        """The width D_t of stored teacher layer ``layer`` (KeyError if it is not stored)."""
        if int(layer) not in self.hidden_layers:
            raise KeyError(f"teacher layer {layer} is not stored in {self.dir}")
        return int(self._hidden["dims"][str(int(layer))])

    def _codec(self, layer: int) -> torch.Tensor:
        if layer not in self._codecs:
            self._codecs[layer] = torch.from_numpy(
                np.load(self.dir / codec_name(layer, self.hidden_compress))
            )
        return self._codecs[layer]

    def _hidden_array(self, shard: int, layer: int) -> np.ndarray:
        if (shard, layer) not in self._hidden_arrays:
            path = self.dir / f"{shard_stem(shard)}{hidden_suffix(layer)}"
            self._hidden_arrays[shard, layer] = np.load(path, mmap_mode="r")
        return self._hidden_arrays[shard, layer]

    def hidden(self, cut_ids: Sequence[str], layers: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Zero-padded stored teacher layers of several cuts, decompressed: one (B, T', D_t)
        float32 tensor per entry of ``layers`` (padding frames hold the codec's zero code)."""
        entries = [self._entry(c) for c in cut_ids]
        longest = max((frames for _, _, frames in entries), default=0)
        out = []
        for layer in layers:
            self.hidden_dim(layer)  # stored?
            parts = [self._hidden_array(s, layer)[o : o + f] for s, o, f in entries]
            codes = np.zeros((len(parts), longest, parts[0].shape[1]), dtype=parts[0].dtype)
            for b, part in enumerate(parts):
                codes[b, : len(part)] = part
            codec = self._codec(layer)
            out.append(decode_hidden(self.hidden_compress, codec, torch.from_numpy(codes)))
        return tuple(out)
