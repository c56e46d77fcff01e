"""Checks of a target store, cheap and full (lhotse's ``qa.validate(obj, read_data=False)``
shape), and the command that repairs what they find.

- :func:`validate` with ``read_data=False`` (what opening a store does): the index parses and
  records every file's size; each listed file is there with that size. O(shards) stats, no
  reads. With ``read_data=True`` (``asr-kd-dump-targets out_dir=... verify=true``,
  :meth:`~asr_kd.distill.store.reader.SoftTargetStore.verify`): also every file's SHA-256.
- :func:`shard_problems`: the same for one committed shard against its own ``.json`` (a resumed
  dump checks the shards of the subsets it dumps, and recomputes a damaged one).
- :func:`redump_hint`: ``re-run asr-kd-dump-targets teacher_ckpt=... out_dir=... (...)``, the
  resumed dump that repairs a store, with the settings it recorded.

Every error is one line (:class:`~asr_kd.errors.BadFileError`, or
:class:`~asr_kd.errors.MissingFileError` when every bad file is absent) naming the bad files and
that command. A store written before file sizes were recorded cannot be checked: opening it is a
``BadFileError`` saying so, and the same resumed dump re-dumps its shards (it treats a shard
without recorded sizes as damaged).

Usage:
    index = read_index(targets_dir)                 # the index, or a one-line error
    validate(targets_dir, index=index)              # sizes only
    summary = validate(targets_dir, read_data=True) # sizes and SHA-256
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from omegaconf import OmegaConf

from asr_kd.checkpoint import file_sha256
from asr_kd.config import as_list
from asr_kd.distill.store.format import (
    ARRAY_SUFFIXES,
    INDEX_NAME,
    MARKER_SUFFIX,
    read_json,
    shard_stem,
)
from asr_kd.errors import BadFileError, MissingFileError

__all__ = [
    "Damage",
    "raise_damage",
    "read_index",
    "redump_hint",
    "shard_problems",
    "validate",
]

_SHOWN = 4  # bad files named in one error line; the rest are counted


class Damage(NamedTuple):
    """One bad file of a store: ``text`` names it and what is wrong ("shard_00000.probs.npy is
    100 bytes, index says 72192"); ``missing`` when it is not there at all."""

    subset: str | None
    text: str
    missing: bool = False


def _file_problem(path: Path, record: dict, read_data: bool, says: str) -> str | None:
    """What is wrong with ``path`` against its ``{"bytes", "sha256"}`` record (stat only unless
    ``read_data``); None when nothing is."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path.name} is missing"
    if size != record["bytes"]:
        return f"{path.name} is {size} bytes, {says} says {record['bytes']}"
    if read_data and (sha := file_sha256(path)) != record["sha256"]:
        return f"{path.name} has SHA-256 {sha}, {says} says {record['sha256']}"
    return None


def _check_files(
    out_dir: Path, files: dict, subset: str | None, read_data: bool, says: str
) -> list[Damage]:
    damage = []
    for name, record in files.items():
        problem = _file_problem(out_dir / name, record, read_data, says)
        if problem:
            damage.append(Damage(subset, problem, problem.endswith(" is missing")))
    return damage


def shard_problems(out_dir: Path, shard: int, meta: dict, read_data: bool) -> list[Damage]:
    """The damage of one committed shard (``meta``: its ``.json``): each file's size (and
    SHA-256 if ``read_data``) against what the ``.json`` records; a ``.json`` that records no
    sizes (written before they were) is damage too."""
    subset = (meta.get("data") or {}).get("subset")
    marker = f"{shard_stem(shard)}{MARKER_SUFFIX}"
    if "files" not in meta:
        return [Damage(subset, f"{marker} records no file sizes (written before they were)")]
    return _check_files(out_dir, meta["files"], subset, read_data, marker)


def _saved_dump_config(targets_dir: Path) -> dict:
    """The ``config.yaml`` the dump saved in its ``out_dir``, as a dict ({} when unreadable)."""
    try:
        saved = OmegaConf.to_container(OmegaConf.load(targets_dir / "config.yaml"))
    except Exception:  # absent, or not YAML: the hint falls back to generic words
        return {}
    return saved if isinstance(saved, dict) else {}


def _hidden_words(fingerprint: dict) -> str:
    layers = fingerprint.get("hidden_layers")
    if not layers:
        return ""
    compress = fingerprint.get("hidden_compress", "none")
    return f" hidden_layers=[{','.join(map(str, layers))}] hidden_compress={compress}"


def redump_hint(
    targets_dir: Path,
    subsets: Iterable[str] = (),
    fixes: str = "it recomputes damaged shards",
    index: dict | None = None,
    pseudo_labels: bool | None = None,
) -> str:
    """``re-run asr-kd-dump-targets teacher_ckpt=... data.dir=... subsets=... out_dir=... k=...
    temperature=... [pseudo_labels=true] (fixes)``: the resumed dump that repairs the store, with
    the settings recorded in its ``index`` (None: read from ``index.json``), else in its saved
    ``config.yaml``; generic words for what neither has. ``pseudo_labels`` None: as the store
    (whether its index records pseudo-labels)."""
    index = (read_json(targets_dir / INDEX_NAME) if index is None else index) or {}
    if pseudo_labels is None:
        pseudo_labels = "pseudo_labels" in index
    labels = " pseudo_labels=true" if pseudo_labels else ""
    saved = _saved_dump_config(targets_dir)
    fingerprint = index.get("fingerprint") or {}
    names = sorted(set(subsets)) or list(index.get("subsets") or [])
    saved_subsets = saved.get("subsets", saved.get("subset"))  # a config saved before the rename
    names = names or [str(s) for s in as_list(saved_subsets) if s is not None]
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
            f"re-run asr-kd-dump-targets with the dump's teacher_ckpt, data.dir, subsets, k and "
            f"temperature and out_dir={targets_dir}{labels} ({fixes})"
        )
    commands = [
        f"asr-kd-dump-targets teacher_ckpt={settings['teacher_ckpt']} data.dir={data_dir} "
        f"subsets={group[0] if len(group) == 1 else '[' + ','.join(group) + ']'} "
        f"out_dir={targets_dir} k={settings['k']} temperature={settings['temperature']}"
        f"{_hidden_words(fingerprint)}{labels}"
        for data_dir, group in by_dir.items()
    ]
    return f"re-run {' and '.join(commands)} ({fixes})"


def raise_damage(targets_dir: Path, damage: Sequence[Damage], index: dict) -> None:
    """Raise one error naming every bad file and the repair; MissingFileError if all are absent."""
    if not damage:
        return
    error = MissingFileError if all(d.missing for d in damage) else BadFileError
    shown = [d.text for d in damage[:_SHOWN]]
    shown += [f"{len(damage) - _SHOWN} more files"] * (len(damage) > _SHOWN)
    subsets = [d.subset for d in damage if d.subset is not None]
    raise error(
        f"soft targets in {targets_dir} are damaged: {'; '.join(shown)}; "
        + redump_hint(targets_dir, subsets, index=index)
    )


def _unsized_shards(index: dict) -> list[str] | None:
    """The shards whose array sizes ``index.json`` does not record (None: it records no shards
    at all); [] for a store written with sizes."""
    if "shards" not in index:
        return None
    return [
        stem
        for stem, entry in index["shards"].items()
        if any(f"{stem}{suffix}" not in entry["files"] for suffix in ARRAY_SUFFIXES)
    ]


def _refuse_unsized(targets_dir: Path, index: dict) -> None:
    """``BadFileError`` when the store predates recorded file sizes: nothing can check it."""
    unsized = _unsized_shards(index)
    if unsized == []:
        return
    if unsized is None:
        which, subsets = "its shards", []
    else:
        which = ", ".join(unsized[:_SHOWN])
        which += f" and {len(unsized) - _SHOWN} more" if len(unsized) > _SHOWN else ""
        subsets = [index["shards"][stem].get("subset") for stem in unsized]
    raise BadFileError(
        f"soft targets in {targets_dir} predate recorded file sizes ({INDEX_NAME} records none "
        f"for {which}), so they cannot be checked; "
        + redump_hint(
            targets_dir,
            [s for s in subsets if s is not None],
            fixes="it re-dumps the shards written before sizes were recorded",
            index=index,
        )
    )


def read_index(targets_dir: Path) -> dict:
    """``index.json`` of a store: ``MissingFileError`` without one, ``BadFileError`` when it is
    not an index (cut short) or predates recorded file sizes; each names the repair."""
    index_path = targets_dir / INDEX_NAME
    if not index_path.is_file():
        raise MissingFileError(
            f"no soft targets at {index_path} (expected the out_dir of a finished "
            "asr-kd-dump-targets run)"
        )
    index = read_json(index_path)
    if index is None or "fingerprint" not in index or "cuts" not in index:
        raise BadFileError(
            f"soft targets in {targets_dir} are damaged: {INDEX_NAME} is not a JSON index "
            "(truncated?); "
            + redump_hint(targets_dir, fixes="it rewrites the index from the committed shards")
        )
    _refuse_unsized(targets_dir, index)
    return index


def validate(
    targets_dir: str | os.PathLike, read_data: bool = False, index: dict | None = None
) -> dict:
    """Check the store in ``targets_dir`` against its ``index`` (None: :func:`read_index`):
    every listed file's size, and with ``read_data`` its SHA-256 too. Raise naming every bad
    file and the repair; return ``{"out_dir", "verified": True, "read_data", "shards", "files",
    "bytes"}`` (``files``, ``bytes``: of the shards)."""
    targets_dir = Path(targets_dir)
    index = read_index(targets_dir) if index is None else index
    damage = []
    for entry in index["shards"].values():
        damage += _check_files(targets_dir, entry["files"], entry["subset"], read_data, INDEX_NAME)
    codec_files = (index.get("hidden") or {}).get("codec_files") or {}
    damage += _check_files(targets_dir, codec_files, None, read_data, INDEX_NAME)
    raise_damage(targets_dir, damage, index)
    records = [record for entry in index["shards"].values() for record in entry["files"].values()]
    return {
        "out_dir": str(targets_dir),
        "verified": True,
        "read_data": read_data,
        "shards": len(index["shards"]),
        "files": len(records),
        "bytes": sum(record["bytes"] for record in records),
    }
