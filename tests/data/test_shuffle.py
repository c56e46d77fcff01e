"""write_shuffled / shuffled_cuts: one gzipped manifest of several, its lines in a seeded order."""

from __future__ import annotations

import gzip
import os

import pytest

from asr_kd.data import shuffle
from asr_kd.data.layout import DataDir
from asr_kd.data.shuffle import shuffled_cuts, write_shuffled
from asr_kd.errors import MissingFileError


def _write(path, lines: list[bytes], last_newline: bool = True) -> None:
    body = b"\n".join(lines) + (b"\n" if last_newline else b"")
    with gzip.open(path, "wb") as f:
        f.write(body)


def _read(path) -> list[bytes]:
    with gzip.open(path, "rb") as f:
        return f.read().splitlines()


def _two_subsets(tmp_path) -> tuple[list, list[bytes]]:
    """Two gzipped sources of numbered lines (the second without a final newline)."""
    a = [b'{"id": "a-%03d"}' % i for i in range(200)]
    b = [b'{"id": "b-%03d"}' % i for i in range(300)]
    _write(tmp_path / "cuts_a.jsonl.gz", a)
    _write(tmp_path / "cuts_b.jsonl.gz", b, last_newline=False)
    return [tmp_path / "cuts_a.jsonl.gz", tmp_path / "cuts_b.jsonl.gz"], a + b


def test_every_line_is_written_once_in_an_order_fixed_by_the_seed(tmp_path):
    sources, lines = _two_subsets(tmp_path)
    assert write_shuffled(sources, tmp_path / "out/x.jsonl.gz", seed=0) == len(lines)
    first = _read(tmp_path / "out/x.jsonl.gz")
    assert sorted(first) == sorted(lines) and first != lines
    # both subsets from the start, not one after the other
    assert {line[8:9] for line in first[:50]} == {b"a", b"b"}
    write_shuffled(sources, tmp_path / "again.jsonl.gz", seed=0)
    write_shuffled(sources, tmp_path / "other.jsonl.gz", seed=1)
    assert _read(tmp_path / "again.jsonl.gz") == first != _read(tmp_path / "other.jsonl.gz")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.jsonl.gz"]  # no temp file


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_temporary_one(tmp_path, monkeypatch):
    sources, _ = _two_subsets(tmp_path)

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(shuffle.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_shuffled(sources, tmp_path / "out/x.jsonl.gz", seed=0)
    assert list((tmp_path / "out").iterdir()) == []


def test_written_once_and_again_when_a_subset_is_prepared_again(tmp_path, monkeypatch):
    _two_subsets(tmp_path)
    data = DataDir(tmp_path)
    calls = []
    monkeypatch.setattr(shuffle, "write_shuffled", lambda *a: calls.append(a) or write_shuffled(*a))
    path = shuffled_cuts(data, ["a", "b"], seed=0)
    assert path == data.shuffled_cuts(["a", "b"], 0) and len(calls) == 1
    assert shuffled_cuts(data, ["a", "b"], seed=0) == path and len(calls) == 1
    newer = path.stat().st_mtime_ns + 10**9
    os.utime(data.cuts("b"), ns=(newer, newer))
    shuffled_cuts(data, ["a", "b"], seed=0)
    assert len(calls) == 2
    with pytest.raises(MissingFileError, match=r"no prepared subset 'c'.*\['a', 'b'\]"):
        shuffled_cuts(data, ["a", "c"], seed=0)
