"""Finished rows of an evaluation on disk, so that a rerun (or a killed run) does only the rest.

Each finished row is written as ``<out_dir>/rows/<key>.json`` (``key`` as its hypotheses file:
``<model>.<subset>.<mode>[-int8]``) beside ``hyps/<key>.tsv``, with the fingerprint of what
determines it: the checkpoint's SHA-256, the subset's cuts file SHA-256, the row's mode,
runtime, quantize, decoding and search settings (files named by them: path, size and mtime),
the batched pass's device and the timed pass's settings. A rerun of the same command finds the
row, compares fingerprints and skips it (and says so); any changed setting gives another
fingerprint, and that row alone is decoded again.

Usage:
    store = RowStore(out_dir)
    fp = fingerprint({"ckpt": store.sha256(path), "mode": "stream-320ms", ...})
    row, extra = store.get("student_kd.test.stream-320ms", fp) or (None, None)
    store.put("student_kd.test.stream-320ms", fp, row, extra={"check": {...}})
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from asr_kd.checkpoint import file_sha256
from asr_kd.evaluation.rows import ResultRow
from asr_kd.models.loading import source_sha256

__all__ = ["ROWS_DIR", "RowStore", "file_identity", "fingerprint"]

log = logging.getLogger(__name__)

ROWS_DIR = "rows"


def fingerprint(parts: dict[str, Any]) -> str:
    """SHA-256 of ``parts`` as canonical JSON (keys sorted): equal settings, equal fingerprint.

    >>> fingerprint({"a": 1, "b": [2]}) == fingerprint({"b": [2], "a": 1})
    True
    """
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_identity(path: str | os.PathLike | None) -> dict | None:
    """A settings file (an LM, a lexicon, an HLG graph) as ``path``, ``size``, ``mtime_ns``:
    cheap for a multi-GB ARPA file, and any rewrite changes it. None for None."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        return {"path": str(p)}
    stat = p.stat()
    return {"path": str(p.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class RowStore:
    """``<out_dir>/rows/<key>.json``: finished rows with their fingerprints (module docstring)."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.dir = Path(out_dir) / ROWS_DIR
        self._sha: dict[str, str] = {}

    def sha256(self, source: str | os.PathLike) -> str | None:
        """SHA-256 of a checkpoint's weights (any source string, ``hf:...`` too) or of a file's
        content (a cuts file), computed once per run."""
        key = str(source)
        if key not in self._sha:
            is_file = Path(key).is_file()
            self._sha[key] = file_sha256(key) if is_file else source_sha256(key)
        return self._sha[key]

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str, fp: str, hyps: Path) -> tuple[ResultRow, dict] | None:
        """The finished row ``key`` and its extra entries, when its fingerprint is ``fp`` and its
        hypotheses file ``hyps`` exists; None otherwise (never written, or other settings)."""
        path = self.path(key)
        if not path.is_file() or not Path(hyps).is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # a file cut short: decode the row again
            return None
        if stored.get("fingerprint") != fp:
            log.info("row %s: settings changed since %s, decoding it again", key, path)
            return None
        log.info("row %s: finished in %s (same fingerprint), skipped", key, path)
        return ResultRow.from_dict(stored["row"]), stored.get("extra", {})

    def put(self, key: str, fp: str, row: ResultRow, extra: dict | None = None) -> None:
        """Write row ``key`` atomically (temp file, then rename): a kill leaves it whole or
        absent."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        tmp = path.with_suffix(".json.tmp")
        record = {"fingerprint": fp, "row": row.to_dict(), "extra": extra or {}}
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, path)
