"""asr_kd.data.extraction: header-only probes, fbank jobs that report a body that does not decode,
and CMVN sums that do not depend on the number of jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import Recording

from asr_kd.data.extraction import CmvnSums, WorkerPool, extract_features, probe_all, probe_audio


def _flac(path: Path, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    sf.write(path, samples, 16000, format="FLAC", subtype="PCM_16")
    return path


def _truncated_flac(path: Path) -> Path:
    """A FLAC cut to its first third: the header still gives the full sample count."""
    _flac(path, seconds=3.0, seed=9)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def test_the_probe_reads_the_header_only_and_counts_an_unreadable_file(tmp_path):
    """A truncated FLAC passes the probe (its header is whole: nothing is decoded); a file whose
    header is garbage is an error naming the reason, not a crash; an empty file is zero-length."""
    truncated = _truncated_flac(tmp_path / "truncated.flac")
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    info = probe_audio(str(truncated))
    assert (info.num_samples, info.sample_rate, info.channels, info.error) == (48000, 16000, 1, "")
    assert probe_audio(str(garbage)).error
    assert probe_audio(str(empty)).num_samples == 0 and not probe_audio(str(empty)).error
    with WorkerPool(2) as pool:
        infos = probe_all(pool, [str(truncated), str(garbage), str(empty)], desc="probe")
    assert [i.num_samples for i in infos] == [48000, 0, 0]


def _cuts(paths: list[Path]) -> list:
    """One cut per file, id = the file's stem (lhotse reads the header)."""
    return [Recording.from_file(p).to_cut() for p in paths]


def test_a_body_that_does_not_decode_is_a_failure_not_a_crash(tmp_path):
    good = [_flac(tmp_path / f"good{n}.flac", seconds=1.0 + n / 4, seed=n) for n in range(3)]
    truncated = _truncated_flac(tmp_path / "truncated.flac")
    cuts = _cuts([*good, truncated])
    with WorkerPool(2) as pool:
        result = extract_features(pool, cuts, tmp_path / "feats", desc="fbank")
    assert list(result.failures) == ["truncated"]
    assert "cannot decode audio" in result.failures["truncated"]
    assert [c.id for c in result.cuts] == ["good0", "good1", "good2"]
    assert sorted(p.name for p in (tmp_path / "feats").iterdir()) == ["feats-0.lca", "feats-1.lca"]
    assert result.sums.num_frames == sum(c.cut().load_features().shape[0] for c in result.cuts)


def test_cmvn_sums_are_the_sequential_sums_in_id_order_whatever_the_job_count(tmp_path):
    """Per-cut float64 sums added in cut-id order: bit-identical to one process reading every
    stored cut in that order, for 1 job or 3 (a per-job sum merged afterwards is not)."""
    paths = [_flac(tmp_path / f"u{n:02d}.flac", seconds=0.5 + n / 7, seed=n) for n in range(9)]
    sums = {}
    for jobs in (1, 3):
        with WorkerPool(jobs) as pool:
            result = extract_features(pool, _cuts(paths), tmp_path / f"feats{jobs}", desc="fbank")
        sums[jobs] = result.sums
    expected = CmvnSums()
    for stored in result.cuts:
        feats = stored.cut().load_features().astype(np.float64)
        expected.add(feats.sum(axis=0), (feats**2).sum(axis=0), feats.shape[0])
    for jobs, got in sums.items():
        assert got.num_frames == expected.num_frames, jobs
        assert got.total.tobytes() == expected.total.tobytes(), jobs
        assert got.total_sq.tobytes() == expected.total_sq.tobytes(), jobs
    back = CmvnSums.from_json(json.loads(json.dumps(sums[3].to_json())))
    assert back.total.tobytes() == expected.total.tobytes()
    assert back.stats() == expected.stats()


def test_the_jobs_serialise_each_cut_and_the_manifests_asked_for(tmp_path):
    """The JSONL lines a job returns are lhotse's own serialisation: the cut read back from its
    line equals the cut with the stored features, and the recording/supervision lines come back
    only for the ids asked (speed copies are not in those manifests)."""
    from lhotse import Recording as LhotseRecording
    from lhotse.serialization import deserialize_item

    paths = [_flac(tmp_path / f"u{n}.flac", seconds=1.0, seed=n) for n in range(4)]
    cuts = _cuts(paths)
    with WorkerPool(2) as pool:
        result = extract_features(
            pool, cuts, tmp_path / "feats", desc="fbank", manifest_ids={"u0", "u3"}
        )
    assert [c.id for c in result.cuts] == ["u0", "u1", "u2", "u3"]
    assert [c.manifest_lines is not None for c in result.cuts] == [True, False, False, True]
    stored = result.cuts[0]
    assert stored.cut().recording == cuts[0].recording
    assert stored.cut().load_features().shape == (100, 80)
    assert deserialize_item(json.loads(stored.manifest_lines[0])) == cuts[0].recording
    assert isinstance(deserialize_item(json.loads(stored.manifest_lines[0])), LhotseRecording)
    assert len(stored.manifest_lines) == 1  # these cuts have no supervision
    assert stored.seconds == 1.0
