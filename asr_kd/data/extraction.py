"""The parallel half of asr-kd-prepare: header-only audio probes, fbank extraction in ``num_jobs``
processes, and the CMVN sums of what was stored.

A probe reads the file's header only (libsndfile through ``soundfile.info``: sample count, rate,
channels); the body is decoded once, by the fbank extraction. A file whose header reads but whose
body does not decode (a truncated FLAC) therefore passes the probe and fails in
:func:`extract_features`, which returns it among the failures (prepare counts it as
``unreadable_audio``, as a bad header) instead of raising. Stored features holding NaN or inf
are failures too.

Each job writes one lhotse ``LilcomChunkyWriter`` file ``feats-<job>.lca`` and takes every
``num_jobs``-th cut, as lhotse's ``CutSet.compute_and_store_features`` splits them. CMVN sums are
taken per cut from the stored (lilcom-compressed) features read back in the job, and added up in
the main process in cut-id order: the same float64 operations in the same order as one process
reading every cut, so the statistics do not depend on ``num_jobs``.

Usage:
    with WorkerPool(num_jobs) as pool:
        infos = probe_all(pool, ["a.flac", "b.flac"], desc="probe train")   # [AudioInfo]
        result = extract_features(pool, cuts, DataDir(out).feats("train"), desc="fbank train")
    result.cuts          # sorted by id, with features; result.failures: {cut id: error}
    result.sums          # CmvnSums over result.cuts; .stats() -> {"mean", "std", "num_frames"}
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import queue
import sys
from collections.abc import Collection, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asr_kd.data.features import FBANK_DIM, fbank_extractor
from asr_kd.errors import BadFileError

__all__ = [
    "AudioInfo",
    "CmvnSums",
    "ExtractResult",
    "StoredCut",
    "WorkerPool",
    "extract_features",
    "probe_all",
    "write_jsonl",
]

_PROGRESS = None  # in a worker: the queue its seconds of audio done go to (WorkerPool)


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says; ``error`` (one line) when it cannot be read."""

    num_samples: int = 0
    sample_rate: int = 0
    channels: int = 0
    error: str = ""


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def probe_audio(path: str) -> AudioInfo:
    """The header of ``path`` (no samples decoded). An empty (0-byte) file is zero-length audio:
    it is what libsndfile writes for a FLAC of no samples."""
    import os

    import soundfile as sf

    try:
        if os.path.getsize(path) == 0:
            return AudioInfo(0, 0, 1)
        info = sf.info(path)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, OSError...
        return AudioInfo(error=_first_line(error))
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


@dataclass
class CmvnSums:
    """float64 sums of fbank frames and of their squares, ``(80,)`` each, and the frame count."""

    total: np.ndarray = field(default_factory=lambda: np.zeros(FBANK_DIM))
    total_sq: np.ndarray = field(default_factory=lambda: np.zeros(FBANK_DIM))
    num_frames: int = 0

    def add(self, total: np.ndarray, total_sq: np.ndarray, num_frames: int) -> None:
        self.total += total
        self.total_sq += total_sq
        self.num_frames += int(num_frames)

    def to_json(self) -> dict:
        """Exact: ``json`` writes a float as the shortest repr that reads back to the same bits."""
        return {
            "total": self.total.tolist(),
            "total_sq": self.total_sq.tolist(),
            "num_frames": self.num_frames,
        }

    @classmethod
    def from_json(cls, entry: dict) -> CmvnSums:
        return cls(
            np.array(entry["total"], np.float64),
            np.array(entry["total_sq"], np.float64),
            int(entry["num_frames"]),
        )

    def stats(self) -> dict:
        """``{"mean": [80], "std": [80], "num_frames": n}`` (std floored at 1e-5)."""
        if self.num_frames == 0:
            raise BadFileError(
                "no training frames left for CMVN: every train utterance was dropped"
            )
        mean = self.total / self.num_frames
        std = np.sqrt(np.maximum(self.total_sq / self.num_frames - mean**2, 1e-10))
        return {"mean": mean.tolist(), "std": std.tolist(), "num_frames": self.num_frames}


def _init_worker(progress) -> None:
    global _PROGRESS
    _PROGRESS = progress
    torch.set_num_threads(1)  # one process per core; more threads only contend


# Linux forks the workers: they inherit the imported torch and lhotse instead of importing them
# again (3.7 s of a 20 s prepare of the demo corpus went to two spawned workers' imports).
# Elsewhere (macOS: fork is unsafe with its system libraries) they are spawned.
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


class WorkerPool:
    """``num_jobs`` worker processes (one torch thread each), started at once, and the queue
    through which they report progress; a context manager."""

    def __init__(self, num_jobs: int) -> None:
        self.num_jobs = num_jobs
        context = multiprocessing.get_context(_START_METHOD)
        self.progress = context.Queue()
        self.executor = ProcessPoolExecutor(
            num_jobs, mp_context=context, initializer=_init_worker, initargs=(self.progress,)
        )
        # Start every worker now, while this process runs no other thread and has run no torch
        # op: a forked worker then inherits nothing but imported modules.
        for ready in [self.executor.submit(int) for _ in range(num_jobs)]:
            ready.result()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.executor.shutdown(cancel_futures=True)
        self.progress.close()


def probe_all(pool: WorkerPool, paths: list[str], desc: str) -> list[AudioInfo]:
    """:func:`probe_audio` of every path, in order, in the pool."""
    results = pool.executor.map(probe_audio, paths, chunksize=64)
    return list(tqdm(results, total=len(paths), desc=desc, unit="file", dynamic_ncols=True))


@dataclass(frozen=True)
class StoredCut:
    """A cut whose features are stored, as the job serialised it: the main process writes the
    JSON lines as they are (lhotse's ``to_dict``, once per cut, in the jobs, not serially)."""

    id: str
    seconds: float
    speaker: str | None
    line: str  # the cut with its features, one JSONL line of a lhotse CutSet
    manifest_lines: tuple[str, ...] | None  # its recording's line, then its supervisions', if asked

    def cut(self):
        """The lhotse cut (tests, inspection)."""
        from lhotse.serialization import deserialize_item

        return deserialize_item(json.loads(self.line))


@dataclass
class _JobResult:
    cuts: list[StoredCut]  # in the job's order (cut-id order)
    failures: dict[str, str]  # cut id -> one-line error
    totals: np.ndarray  # (n, 80) float64 per-cut sums over frames
    totals_sq: np.ndarray  # (n, 80) float64 per-cut sums of squares
    frames: list[int]  # (n,)


def _json(item) -> str:
    """One JSONL line, as lhotse's ``SequentialJsonlWriter`` writes it."""
    return json.dumps(item.to_dict(), ensure_ascii=False)


def _stored(cut, with_manifests: bool) -> StoredCut:
    manifests = None
    if with_manifests:
        manifests = (_json(cut.recording), *(_json(s) for s in cut.supervisions))
    speaker = cut.supervisions[0].speaker if cut.supervisions else None
    return StoredCut(cut.id, cut.duration, speaker, _json(cut), manifests)


def _load_samples(cut) -> np.ndarray:
    """``(1, N)`` float32 samples of ``cut``, as ``cut.load_audio()`` gives them. A whole 16 kHz
    file is read by libsndfile directly: lhotse's backend lookup costs as much as the decode."""
    import soundfile as sf

    recording = cut.recording
    whole = cut.start == 0 and cut.duration == recording.duration
    if not whole or recording.transforms or len(recording.sources) != 1:
        return cut.load_audio()
    source = recording.sources[0]
    if source.type != "file" or source.channels != [0]:
        return cut.load_audio()
    samples, _ = sf.read(source.source, dtype="float32", always_2d=True)
    if samples.shape != (recording.num_samples, 1):
        raise BadFileError(
            f"{samples.shape} samples decoded, the header says {recording.num_samples}"
        )
    return np.ascontiguousarray(samples.T)


def _store_fbank(cut, writer):
    """``cut.compute_and_store_features(fbank_extractor(), writer)`` on :func:`_load_samples`."""
    from lhotse.utils import fastcopy

    features = fbank_extractor().extract_from_samples_and_store(
        _load_samples(cut), writer, cut.sampling_rate, offset=cut.start, channel=cut.channel
    )
    return fastcopy(cut, features=features)


def _extract_job(cuts: list, storage: str, manifest_ids: Collection[str]) -> _JobResult:
    """Fbank of ``cuts`` into one lilcom file; then their stored features read back for CMVN,
    and each kept cut serialised (with its recording and supervision when in ``manifest_ids``)."""
    from lhotse import LilcomChunkyWriter

    stored, failures = [], {}
    with LilcomChunkyWriter(storage) as writer:
        for cut in cuts:
            try:
                stored.append(_store_fbank(cut, writer))
            except Exception as error:  # a body that does not decode; lhotse raises many kinds
                failures[cut.id] = f"cannot decode audio: {_first_line(error)}"
            if _PROGRESS is not None:
                _PROGRESS.put(cut.duration)
    kept, totals, totals_sq, frames = [], [], [], []
    for cut in stored:
        feats = cut.load_features().astype(np.float64)
        if not np.isfinite(feats).all():
            failures[cut.id] = "NaN or infinite features (the audio holds NaN or inf samples)"
            continue
        kept.append(_stored(cut, cut.id in manifest_ids))
        totals.append(feats.sum(axis=0))
        totals_sq.append((feats**2).sum(axis=0))
        frames.append(feats.shape[0])
    shape = (len(kept), FBANK_DIM)
    return _JobResult(
        kept,
        failures,
        np.array(totals).reshape(shape),
        np.array(totals_sq).reshape(shape),
        frames,
    )


@dataclass
class ExtractResult:
    cuts: list[StoredCut]  # sorted by id, every one with features
    failures: dict[str, str]  # cut id -> one-line error (no features stored for it)
    sums: CmvnSums  # over ``cuts`` (those in ``cmvn_ids`` when given), added in their order


def _wait_with_progress(pool: WorkerPool, futures: list, bar: tqdm) -> None:
    pending = set(futures)
    while pending:
        _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        _drain(pool, bar)
    _drain(pool, bar)


def _drain(pool: WorkerPool, bar: tqdm) -> None:
    seconds = 0.0
    try:
        while True:
            seconds += pool.progress.get_nowait()
    except queue.Empty:
        pass
    if seconds:  # float sums of durations may overshoot the total by a rounding error
        bar.update(min(seconds / 3600, bar.total - bar.n))


def extract_features(
    pool: WorkerPool,
    cuts: list,
    storage_dir: Path,
    desc: str,
    cmvn_ids: Collection[str] | None = None,
    manifest_ids: Collection[str] = (),
) -> ExtractResult:
    """Fbank of ``cuts`` (lhotse cuts with recordings) into ``storage_dir/feats-<job>.lca``, one
    job per worker; a progress bar in hours of audio. ``storage_dir`` must not hold features of
    another run. The CMVN sums cover the cuts whose ids are in ``cmvn_ids`` (None: all), still
    added in cut-id order: the sums of a subset of the cuts equal those of extracting only it.
    The cuts whose ids are in ``manifest_ids`` come back with their recording's and
    supervision's JSONL lines too (:class:`StoredCut`)."""
    storage_dir.mkdir(parents=True, exist_ok=True)
    n = pool.num_jobs
    manifest_ids = set(manifest_ids)
    futures = []
    for job in range(n):
        part = cuts[job::n]
        asked = {c.id for c in part} & manifest_ids
        storage = str(storage_dir / f"feats-{job}")
        futures.append(pool.executor.submit(_extract_job, part, storage, asked))
    hours = sum(c.duration for c in cuts) / 3600
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} h [{elapsed}<{remaining}]"
    with tqdm(total=hours, desc=desc, bar_format=bar_format, dynamic_ncols=True) as bar:
        _wait_with_progress(pool, futures, bar)
    results = [f.result() for f in futures]
    order = sorted(
        (cut.id, job, row) for job, r in enumerate(results) for row, cut in enumerate(r.cuts)
    )
    sums = CmvnSums()
    for cut_id, job, row in order:
        if cmvn_ids is not None and cut_id not in cmvn_ids:
            continue
        r = results[job]
        sums.add(r.totals[row], r.totals_sq[row], r.frames[row])
    failures = {k: v for r in results for k, v in r.failures.items()}
    return ExtractResult([results[job].cuts[row] for _, job, row in order], failures, sums)


def write_jsonl(path: Path, lines: Iterable[str]) -> None:
    """A ``.jsonl.gz`` manifest of ``lines`` (as :class:`StoredCut` holds them): lhotse reads it
    as a CutSet, RecordingSet or SupervisionSet, whichever the lines are."""
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")
