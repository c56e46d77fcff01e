"""Soft targets on disk: the teacher's top-k posteriors per output frame, sharded, fingerprinted,
checked.

The format, owned here (written by :mod:`asr_kd.distill.dump`, read by :class:`SoftTargetStore`):
per cut and per output frame, the ``k`` most probable token ids (int16) and their probabilities
(fp16) at the dump's temperature (raw, not renormalised: the loss renormalises, and the residual
mass stays available for an "other" bucket). Frames of consecutive cuts are concatenated into
shards:

    <out_dir>/shard_00000.ids.npy     (N, k) int16     N = frames in the shard
    <out_dir>/shard_00000.probs.npy   (N, k) float16
    <out_dir>/shard_00000.labels.jsonl  only with pseudo_labels=true: the teacher's transcript of
                                      each cut of the shard (asr_kd/distill/pseudo.py)
    <out_dir>/shard_00000.json        {"fingerprint": {...}, "data": {"subset", "cuts_sha256",
                                      "data_dir"}, "files": {name: {"bytes", "sha256"}},
                                      "cuts": {cut_id: [offset, num_frames]},
                                      "pseudo_labels": {"decoder", "confidence"} (with labels)}
    <out_dir>/index.json              {"fingerprint": {...}, "teacher_ckpt", "subsets": {name:
                                      {"cuts_sha256", "data_dir", "num_cuts", "num_frames"}},
                                      "shards": {"shard_00000": {"subset", "files": {name:
                                      {"bytes", "sha256"}}}}, "cuts": {cut_id: [shard, offset,
                                      frames]}, "pseudo_labels": {"confidence", "num_cuts"}
                                      (when shards hold labels), ...}

Storage: ``k * (2 + 2)`` bytes per frame, 32 B at k = 8, against ``V * 4`` B for full fp32
posteriors (char V = 29: 116 B, 3.6x; BPE-500: 2000 B, 62.5x).

Each shard's arrays are written to temp files and renamed, then its ``.json`` is written the
same way; the ``.json`` is the commit marker. The teacher fingerprint (checkpoint SHA-256,
tokenizer fingerprint, frame shift, k, temperature) is stored with every shard and in the index;
loading targets made by another teacher is an error.

Integrity: the ``.json`` records each array file's size and SHA-256 (hashed as it is written);
``index.json`` lists, per shard, those two plus the ``.json``'s own. Opening a store stats every
listed file (O(shards), no reads) and names a missing or resized one with the command that
repairs it (a resumed ``asr-kd-dump-targets``, which checks size and SHA-256 of every shard of
the subsets it dumps and recomputes a damaged one); ``store.verify()`` (``asr-kd-dump-targets
out_dir=... verify=true``) also compares every checksum. Shards dumped before sizes were recorded
are not checked on open (a warning says so); ``verify()`` and a resume check that their arrays
load with the shape their cuts need.

Usage:
    store = SoftTargetStore("exp/targets")          # BadFileError / MissingFileError if damaged
    store.check_fingerprint(teacher_fingerprint(...))
    ids, probs = store.get(cut_id)                  # (T', k) int64, (T', k) float32
    ids, probs, lens = store.batch(cut_ids)         # (B, T', k), (B, T', k), (B,)
    store.pseudo_labels()                           # {cut_id: {"text", "confidence", ...}}
    store.verify()                                  # every SHA-256 too; raises naming bad files
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import OmegaConf

from asr_kd.checkpoint import atomic_write, file_sha256
from asr_kd.config import as_list
from asr_kd.data.layout import DataDir
from asr_kd.distill.hidden import decode
from asr_kd.errors import BadFileError, ConfigError, MissingFileError

__all__ = [
    "ARRAY_SUFFIXES",
    "INDEX_NAME",
    "LABELS_SUFFIX",
    "MAX_INT16_VOCAB",
    "Damage",
    "ShardWriter",
    "SoftTargetStore",
    "bytes_per_frame",
    "check_fingerprint",
    "codec_name",
    "hidden_suffix",
    "save_array",
    "committed_shards",
    "data_identity",
    "redump_hint",
    "remove_shard",
    "shard_markers",
    "shard_problems",
    "shard_stem",
    "teacher_fingerprint",
    "write_index",
]

INDEX_NAME = "index.json"
MAX_INT16_VOCAB = np.iinfo(np.int16).max + 1
ARRAY_SUFFIXES = (".ids.npy", ".probs.npy")
LABELS_SUFFIX = ".labels.jsonl"  # pseudo-labels, one JSON line per cut (asr_kd/distill/pseudo.py)
_DTYPES = {".ids.npy": np.dtype(np.int16), ".probs.npy": np.dtype(np.float16)}


def bytes_per_frame(k: int) -> int:
    """Bytes stored per output frame: k int16 ids + k fp16 probabilities.

    >>> bytes_per_frame(8), 29 * 4, 500 * 4   # vs fp32 posteriors, char and BPE-500
    (32, 116, 2000)
    """
    return k * (np.dtype(np.int16).itemsize + np.dtype(np.float16).itemsize)


def shard_stem(shard: int) -> str:
    """The file-name stem of shard number ``shard`` (``.ids.npy``, ``.probs.npy``, ``.json``).

    >>> shard_stem(3)
    'shard_00003'
    """
    return f"shard_{shard:05d}"


def teacher_fingerprint(
    checkpoint_sha256: str,
    tokenizer_fingerprint: str,
    frame_shift_ms: float,
    k: int,
    temperature: float,
    hidden_layers: Sequence[int] = (),
    hidden_compress: str = "none",
    extra: dict | None = None,
) -> dict:
    """The identity of a set of soft targets: which teacher, which tokens, which frames, which
    k/T, and (only when some are stored) which teacher layers under which compression.

    ``extra``: more fields (a transformers teacher: its id or path, revision, frame
    conversion); an asr_kd teacher has none, so its fingerprint is what it always was."""
    fingerprint = {
        "checkpoint_sha256": str(checkpoint_sha256),
        "tokenizer": str(tokenizer_fingerprint),
        "frame_shift_ms": float(frame_shift_ms),
        "k": int(k),
        "temperature": float(temperature),
        **(extra or {}),
    }
    if hidden_layers:
        fingerprint["hidden_layers"] = [int(x) for x in hidden_layers]
        fingerprint["hidden_compress"] = str(hidden_compress)
    return fingerprint


def hidden_suffix(layer: int) -> str:
    """The file suffix of teacher layer ``layer``'s array in a shard.

    >>> hidden_suffix(4)
    '.hidden4.npy'
    """
    return f".hidden{int(layer)}.npy"


def codec_name(layer: int, compress: str) -> str:
    """The file (in the store's directory) holding layer ``layer``'s ``compress`` parameters
    (named by the codec too: a dump restarted with another codec never reads the old one).

    >>> codec_name(4, "pca16")
    'hidden_codec4.pca16.npy'
    """
    return f"hidden_codec{int(layer)}.{compress}.npy"


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


def data_identity(data_dir: Path, subset: str) -> tuple[dict, int]:
    """``({"subset", "cuts_sha256", "data_dir"}, number of cuts)`` of ``cuts_<subset>.jsonl.gz``.

    The hash is of the decompressed JSON lines: a gzip header carries a timestamp, so hashing the
    file itself would make a byte-identical re-prepare look like new data.
    """
    digest, num_cuts = hashlib.sha256(), 0
    with gzip.open(DataDir(data_dir).prepared_cuts(subset), "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            num_cuts += block.count(b"\n")  # one cut per line
    identity = {"subset": subset, "cuts_sha256": digest.hexdigest(), "data_dir": str(data_dir)}
    return identity, num_cuts


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


class Damage(NamedTuple):
    """One bad file of a store: ``text`` names it and what is wrong ("shard_00000.probs.npy is
    100 bytes, index says 72192"); ``missing`` when it is not there at all."""

    subset: str | None
    text: str
    missing: bool = False


def _file_problem(path: Path, record: dict, checksum: bool, says: str) -> str | None:
    """What is wrong with ``path`` against its ``{"bytes", "sha256"}`` record (stat only unless
    ``checksum``); None when nothing is."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path.name} is missing"
    if size != record["bytes"]:
        return f"{path.name} is {size} bytes, {says} says {record['bytes']}"
    if checksum and (sha := file_sha256(path)) != record["sha256"]:
        return f"{path.name} has SHA-256 {sha}, {says} says {record['sha256']}"
    return None


def _array_problem(path: Path, k: int, frames: int | None) -> str | None:
    """What keeps a shard array dumped before sizes were recorded from serving its cuts: it does
    not load (truncated: numpy cannot map it), or has another dtype or shape than (frames, k)."""
    try:
        array = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file
        return f"{path.name} does not load ({error})"
    suffix = path.name[len(shard_stem(0)) :]
    if array.dtype != _DTYPES[suffix] or array.ndim != 2 or array.shape[1] != k:
        return f"{path.name} holds {array.dtype} {array.shape}, expected {_DTYPES[suffix]} (N, {k})"
    if frames is not None and array.shape[0] != frames:
        return f"{path.name} has {array.shape[0]} frames, its cuts need {frames}"
    return None


def _check_files(
    out_dir: Path, files: dict, subset: str | None, checksum: bool, says: str
) -> list[Damage]:
    damage = []
    for name, record in files.items():
        problem = _file_problem(out_dir / name, record, checksum, says)
        if problem:
            damage.append(Damage(subset, problem, problem.endswith(" is missing")))
    return damage


def _check_arrays(
    out_dir: Path, stem: str, subset: str | None, k: int, frames: int | None
) -> list[Damage]:
    damage = []
    for suffix in ARRAY_SUFFIXES:
        problem = _array_problem(out_dir / f"{stem}{suffix}", k, frames)
        if problem:
            damage.append(Damage(subset, problem, problem.endswith(" is missing")))
    return damage


def shard_problems(out_dir: Path, shard: int, meta: dict, checksum: bool) -> list[Damage]:
    """The damage of one committed shard (``meta``: its ``.json``): each array's size (and SHA-256
    if ``checksum``) against what the ``.json`` records; for a shard from before sizes were
    recorded, that its arrays load as (frames of its cuts, k)."""
    subset = (meta.get("data") or {}).get("subset")
    if "files" in meta:
        return _check_files(out_dir, meta["files"], subset, checksum, f"{shard_stem(shard)}.json")
    frames = sum(num_frames for _, num_frames in meta["cuts"].values())
    return _check_arrays(out_dir, shard_stem(shard), subset, meta["fingerprint"]["k"], frames)


def _saved_dump_config(targets_dir: Path) -> dict:
    """The ``config.yaml`` the dump saved in its ``out_dir``, as a dict ({} when unreadable)."""
    try:
        saved = OmegaConf.to_container(OmegaConf.load(targets_dir / "config.yaml"))
    except Exception:  # absent, or not YAML: the hint falls back to generic words
        return {}
    return saved if isinstance(saved, dict) else {}


def _parse_json(raw: bytes) -> dict | None:
    try:
        obj = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return obj if isinstance(obj, dict) else None


def _read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None when it is absent, unreadable or not an object."""
    try:
        return _parse_json(path.read_bytes())
    except OSError:
        return None


def redump_hint(
    targets_dir: Path,
    subsets: Iterable[str] = (),
    fixes: str = "it recomputes damaged shards",
    index: dict | None = None,
    pseudo_labels: bool | None = None,
) -> str:
    """``re-run asr-kd-dump-targets teacher_ckpt=... data.dir=... subset=... out_dir=... k=...
    temperature=... [pseudo_labels=true] (fixes)``: the resumed dump that repairs the store, with
    the settings recorded in its ``index`` (None: read from ``index.json``), else in its saved
    ``config.yaml``; generic words for what neither has. ``pseudo_labels`` None: as the store
    (whether its index records pseudo-labels)."""
    index = (_read_json(targets_dir / INDEX_NAME) if index is None else index) or {}
    if pseudo_labels is None:
        pseudo_labels = "pseudo_labels" in index
    labels = " pseudo_labels=true" if pseudo_labels else ""
    saved = _saved_dump_config(targets_dir)
    fingerprint = index.get("fingerprint") or {}
    names = sorted(set(subsets)) or list(index.get("subsets") or [])
    names = names or [str(s) for s in as_list(saved.get("subset")) if s is not None]
    known = index.get("subsets") or {}
    saved_dir = (saved.get("data") or {}).get("dir") or index.get("data_dir")
    by_dir: dict[str, list[str]] = {}
    for name in names:
        by_dir.setdefault((known.get(name) or {}).get("data_dir") or saved_dir, []).append(name)
    settings = {
        "teacher_ckpt": index.get("teacher_ckpt") or saved.get("teacher_ckpt"),
        "k": fingerprint.get("k", saved.get("k")),
        "temperature": fingerprint.get("temperature", saved.get("temperature")),
    }
    if not by_dir or None in by_dir or None in settings.values() or "???" in settings.values():
        return (
            f"re-run asr-kd-dump-targets with the dump's teacher_ckpt, data.dir, subset, k and "
            f"temperature and out_dir={targets_dir}{labels} ({fixes})"
        )
    layers = fingerprint.get("hidden_layers")
    hidden = (
        f" hidden_layers=[{','.join(map(str, layers))}] "
        f"hidden_compress={fingerprint.get('hidden_compress', 'none')}"
        if layers
        else ""
    )
    commands = [
        f"asr-kd-dump-targets teacher_ckpt={settings['teacher_ckpt']} data.dir={data_dir} "
        f"subset={group[0] if len(group) == 1 else '[' + ','.join(group) + ']'} "
        f"out_dir={targets_dir} k={settings['k']} temperature={settings['temperature']}{hidden}"
        f"{labels}"
        for data_dir, group in by_dir.items()
    ]
    return f"re-run {' and '.join(commands)} ({fixes})"


def _raise_damage(targets_dir: Path, damage: Sequence[Damage], index: dict) -> None:
    """Raise one error naming every bad file and the repair; MissingFileError if all are absent."""
    if not damage:
        return
    error = MissingFileError if all(d.missing for d in damage) else BadFileError
    shown = [d.text for d in damage[:4]] + [f"{len(damage) - 4} more files"] * (len(damage) > 4)
    subsets = [d.subset for d in damage if d.subset is not None]
    raise error(
        f"soft targets in {targets_dir} are damaged: {'; '.join(shown)}; "
        + redump_hint(targets_dir, subsets, index=index)
    )


def _read_index(targets_dir: Path) -> dict:
    index_path = targets_dir / INDEX_NAME
    if not index_path.is_file():
        raise MissingFileError(
            f"no soft targets at {index_path} (expected the out_dir of a finished "
            "asr-kd-dump-targets run)"
        )
    index = _read_json(index_path)
    if index is None or "fingerprint" not in index or "cuts" not in index:
        raise BadFileError(
            f"soft targets in {targets_dir} are damaged: {INDEX_NAME} is not a JSON index "
            "(truncated?); "
            + redump_hint(targets_dir, fixes="it rewrites the index from the committed shards")
        )
    return index


class SoftTargetStore:
    """Read-only access to a directory written by ``asr-kd-dump-targets`` (shards memory-mapped).

    Opening it stats every shard file listed in ``index.json`` and raises
    :class:`~asr_kd.errors.BadFileError` (:class:`~asr_kd.errors.MissingFileError` when all the
    bad files are absent) naming them and the dump that repairs them; :meth:`verify` also
    compares their SHA-256.

    Args:
        targets_dir: the dump's ``out_dir`` (holds ``index.json``).
    """

    def __init__(self, targets_dir: str | os.PathLike):
        self.dir = Path(targets_dir)
        index = _read_index(self.dir)
        self.fingerprint: dict = index["fingerprint"]
        self.k: int = int(self.fingerprint["k"])
        self.temperature: float = float(self.fingerprint["temperature"])
        self.info: dict = {key: v for key, v in index.items() if key not in ("cuts", "shards")}
        self._cuts: dict[str, list[int]] = index["cuts"]
        # shard stem -> {"subset", "files": {name: {"bytes", "sha256"}}}; None: an old index
        self._layout: dict[str, dict] | None = index.get("shards")
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # stored teacher layers (hidden-state KD): {"dims": {layer: D}, "codec_files": {...}}
        self.hidden_layers: tuple[int, ...] = tuple(self.fingerprint.get("hidden_layers", ()))
        self.hidden_compress: str = str(self.fingerprint.get("hidden_compress", "none"))
        self._hidden: dict = index.get("hidden") or {}
        self._hidden_arrays: dict[tuple[int, int], np.ndarray] = {}
        self._codecs: dict[int, torch.Tensor] = {}
        _raise_damage(self.dir, self._damage(checksum=False), self.info)
        layout = self._layout or {}
        if self._layout is None or any(self._unrecorded(s, e) for s, e in layout.items()):
            warnings.warn(
                f"soft targets in {self.dir}: shards dumped before asr-kd-dump-targets recorded "
                "file sizes and checksums are not checked on open (verify=true checks that "
                "they load)",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self._cuts)

    def __contains__(self, cut_id: str) -> bool:
        return cut_id in self._cuts

    @staticmethod
    def _unrecorded(stem: str, entry: dict | None) -> bool:
        """Whether ``index.json`` lacks the sizes of a shard's arrays (dumped before they were
        recorded)."""
        return entry is None or any(f"{stem}{x}" not in entry["files"] for x in ARRAY_SUFFIXES)

    def _damage(self, checksum: bool) -> list[Damage]:
        """Every listed file's size (and SHA-256 if ``checksum``) against ``index.json``."""
        damage = []
        for entry in (self._layout or {}).values():
            files, subset = entry["files"], entry.get("subset")
            damage += _check_files(self.dir, files, subset, checksum, INDEX_NAME)
        codec_files = self._hidden.get("codec_files") or {}
        return damage + _check_files(self.dir, codec_files, None, checksum, INDEX_NAME)

    def verify(self) -> dict:
        """Read every shard file: sizes and SHA-256 against ``index.json``; arrays of shards from
        before those were recorded must load as (frames of their cuts, k). Raise naming every bad
        file (as on open); return ``{"out_dir", "verified": True, "shards", "files", "bytes",
        "unrecorded_shards"}``."""
        damage = self._damage(checksum=True)
        frames: dict[int, int] = {}
        for shard, _, num_frames in self._cuts.values():
            frames[shard] = frames.get(shard, 0) + num_frames
        layout = self._layout or {}
        unrecorded = [
            s for s in sorted(frames) if self._unrecorded(shard_stem(s), layout.get(shard_stem(s)))
        ]
        for shard in unrecorded:
            subset = (layout.get(shard_stem(shard)) or {}).get("subset")
            damage += _check_arrays(self.dir, shard_stem(shard), subset, self.k, frames[shard])
        _raise_damage(self.dir, damage, self.info)
        files = [self.dir / n for e in layout.values() for n in e["files"]]
        files += [self.dir / f"{shard_stem(s)}{x}" for s in unrecorded for x in ARRAY_SUFFIXES]
        return {
            "out_dir": str(self.dir),
            "verified": True,
            "shards": len(frames),
            "files": len(files),
            "bytes": sum(path.stat().st_size for path in files),
            "unrecorded_shards": [shard_stem(s) for s in unrecorded],
        }

    def pseudo_labels(self) -> dict[str, dict]:
        """Cut id -> ``{"text", "confidence", "num_tokens"}`` from every shard holding labels
        (``asr-kd-dump-targets pseudo_labels=true``); {} when none does. A labels file that does
        not parse, or does not list exactly its shard's cuts, is a ``BadFileError``."""
        labels: dict[str, dict] = {}
        for stem, entry in (self._layout or {}).items():
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
            self._shards[shard] = (
                np.load(f"{stem}.ids.npy", mmap_mode="r"),
                np.load(f"{stem}.probs.npy", mmap_mode="r"),
            )
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
            out.append(decode(self.hidden_compress, self._codec(layer), torch.from_numpy(codes)))
        return tuple(out)


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


class ShardWriter:
    """Buffers cuts' targets and commits them as numbered shards of about ``shard_frames``;
    ``header`` (fingerprint and data identity) goes into every shard's ``.json``, with the size
    and SHA-256 of each file. ``extra``: per cut, more arrays (T', ...) by file suffix (the
    stored teacher layers, :func:`hidden_suffix`), the same suffixes for every cut. With
    ``labels``, every cut also brings its pseudo-label (a JSON object, ``{"text",
    "confidence", "num_tokens"}``), written as the shard's ``.labels.jsonl``.
    """

    def __init__(
        self, out_dir: Path, header: dict, first_shard: int, shard_frames: int, labels=False
    ):
        self.out_dir, self.header = out_dir, header
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
            files[path.name] = {"bytes": len(lines), "sha256": hashlib.sha256(lines).hexdigest()}
        # the .json is the commit marker: written last, so a crash before it leaves no shard
        _write_json(
            self.out_dir / f"{stem}.json", {**self.header, "files": files, "cuts": self._cuts}
        )
        self.shard += 1
        self._parts, self._labels, self._cuts, self._frames = {}, [], {}, 0


def shard_markers(out_dir: Path) -> dict[int, tuple[dict | None, dict]]:
    """Shard number -> (its ``.json`` contents, None when unreadable: truncated, not JSON, not a
    shard marker; the ``.json``'s own ``{"bytes", "sha256"}``)."""
    markers = {}
    for path in sorted(out_dir.glob("shard_*.json")):
        raw = path.read_bytes()
        meta = _parse_json(raw)
        if meta is not None and not {"fingerprint", "cuts"} <= set(meta):
            meta = None
        record = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        markers[int(path.name[len("shard_") : -len(".json")])] = (meta, record)
    return markers


def _committed(out_dir: Path) -> dict[int, tuple[dict, dict]]:
    """:func:`shard_markers`, raising ``BadFileError`` naming an unreadable one."""
    markers = shard_markers(out_dir)
    for shard, (meta, _) in markers.items():
        if meta is None:
            raise BadFileError(
                f"soft targets in {out_dir} are damaged: {shard_stem(shard)}.json is not a shard "
                "marker (truncated?); "
                + redump_hint(out_dir, fixes="it recomputes the cuts of unreadable shards")
            )
    return markers  # type: ignore[return-value]


def committed_shards(out_dir: Path) -> dict[int, dict]:
    """Shard number -> its committed ``.json`` contents; ``BadFileError`` naming an unreadable
    one (a resumed dump removes those first: an unreadable marker commits nothing)."""
    return {shard: meta for shard, (meta, _) in _committed(out_dir).items()}


def remove_shard(out_dir: Path, shard: int) -> None:
    """Delete a shard: its ``.json`` first (uncommitting it), then its arrays."""
    stem = shard_stem(shard)
    for suffix in (".json", *ARRAY_SUFFIXES, LABELS_SUFFIX):
        (out_dir / f"{stem}{suffix}").unlink(missing_ok=True)


def write_index(out_dir: Path, fingerprint: dict, extra: dict) -> dict:
    """Merge the committed shards into ``index.json`` (written atomically); return it."""
    cuts: dict[str, list[int]] = {}
    subsets: dict[str, dict] = {}
    shards: dict[str, dict] = {}
    labels: dict = {}  # {"confidence", "num_cuts"} over the shards holding pseudo-labels
    for shard, (meta, record) in sorted(_committed(out_dir).items()):
        data = meta["data"]
        stem = shard_stem(shard)
        files = {**meta.get("files", {}), f"{stem}.json": record}
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
