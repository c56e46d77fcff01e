"""One training manifest over several subsets, its cuts in one random order, read lazily.

lhotse's ``DynamicBucketingSampler`` reads its cuts in file order, shuffles them only inside a
buffer (``buffer_size`` cuts) and estimates its duration buckets from the first 10 000 cuts.
Prepared subsets are sorted by cut id, i.e. in speaker blocks, so subsets read one after the other
give an epoch that runs through train-clean-100, then train-clean-360, then train-other-500, a few
speakers at a time, and ends on one subset. icefall's answer, taken here: write the concatenation
once in a random order (its ``cuts_train-all-shuf.jsonl.gz``) and let the sampler's buffer
reshuffle that order differently each epoch.

:func:`write_shuffled` shuffles the lines as text (no cut is parsed: the file holds every line of
its sources, each once). It holds all the lines in memory while it writes, once per data dir;
the training ranks read the result lazily (``CutSet.from_jsonl_lazy``) and hold only what the
sampler buffers. The file is written next to the subsets (:meth:`DataDir.shuffled_cuts`), named
by the subset list and the seed, and written again when a subset's cuts file is newer.

Usage:
    path = shuffled_cuts(DataDir("DATA"), ["train-clean-100", "train-clean-360"], seed=0)
    cuts = CutSet.from_jsonl_lazy(path)
"""

from __future__ import annotations

import gzip
import os
import random
import socket
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from asr_kd.data.layout import DataDir

__all__ = ["shuffled_cuts", "write_shuffled"]


def _read_lines(sources: Sequence[Path]) -> list[bytes]:
    """Every non-empty line of the gzipped files ``sources``, each ending in a newline."""
    lines: list[bytes] = []
    with tqdm(desc="shuffle: read", unit="cut", dynamic_ncols=True, leave=False) as progress:
        for source in sources:
            with gzip.open(source, "rb") as f:
                for line in f:
                    if line.strip():
                        lines.append(line if line.endswith(b"\n") else line + b"\n")
                        progress.update()
    return lines


def write_shuffled(sources: Sequence[Path], dest: Path, seed: int) -> int:
    """Write every line of the gzipped JSONL files ``sources`` into ``dest`` (gzipped) in one
    random order fixed by ``seed``; returns the number of lines.

    Atomic: a temporary file beside ``dest``, then a rename, so a reader never sees half a file
    and writers on several nodes at once leave one whole file (they all write the same lines).
    """
    lines = _read_lines(sources)
    random.Random(seed).shuffle(lines)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        with gzip.open(tmp, "wb", compresslevel=6) as f:
            for line in tqdm(lines, desc="shuffle: write", unit="cut", leave=False):
                f.write(line)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return len(lines)


def shuffled_cuts(data: DataDir, subsets: Sequence[str], seed: int) -> Path:
    """:meth:`DataDir.shuffled_cuts` of ``subsets``, written first when it is missing or older
    than one of the subsets' cuts files (a subset prepared again).

    ``MissingFileError`` naming the prepared subsets when one of ``subsets`` was not prepared."""
    sources = [data.prepared_cuts(s) for s in subsets]
    dest = data.shuffled_cuts(subsets, seed)
    newest = max(p.stat().st_mtime_ns for p in sources)
    if not dest.is_file() or dest.stat().st_mtime_ns < newest:
        write_shuffled(sources, dest, seed)
    return dest
