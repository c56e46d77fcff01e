"""The simulated LibriSpeech-shaped manifest: its shape, its durations, and opening()."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

from lhotse.dataset import DynamicCutSampler

from asr_kd.data.datamodule import load_cuts
from asr_kd.data.layout import DataDir
from asr_kd.data.simulated import (
    LIBRISPEECH_960,
    librispeech_duration,
    opening,
    scaled,
    speaker_of,
    write_simulated,
)

SHAPE = {"clean": (120, 4), "other": (90, 3)}


def test_subsets_have_the_shape_ids_sorted_by_speaker_and_distinct_speakers(tmp_path):
    speakers = write_simulated(tmp_path, SHAPE, seed=0)
    data = DataDir(tmp_path)
    assert data.subsets() == ["clean", "other"] and (data.lang / "tokenizer.json").is_file()
    for subset, (num_cuts, num_speakers) in SHAPE.items():
        cuts = list(load_cuts(tmp_path, subset))
        ids = [c.id for c in cuts]
        assert len(ids) == len(set(ids)) == num_cuts and ids == sorted(ids)
        assert len({speaker_of(i) for i in ids}) == num_speakers
        assert {speakers[speaker_of(i)] for i in ids} == {subset}
        assert all(c.supervisions[0].speaker == speaker_of(c.id) for c in cuts)
        assert all(1.0 <= c.duration == c.recording.duration <= 35.0 for c in cuts)
        assert all(c.has_features and Path(c.features.storage_path).is_file() for c in cuts)
        assert all(len(c.supervisions[0].text) >= 14 * c.duration - 1 for c in cuts)
    assert len(speakers) == 7


def test_durations_are_librispeech_like():
    rng = random.Random(0)
    durations = [librispeech_duration(rng) for _ in range(20000)]
    assert 12.0 <= statistics.mean(durations) <= 12.6
    assert sum(10.0 <= d <= 16.0 for d in durations) / len(durations) >= 0.6
    assert 1.0 <= min(durations) and 30.0 <= max(durations) <= 35.0


def test_the_full_shape_is_librispeech_960_and_scales():
    assert sum(n for n, _ in LIBRISPEECH_960.values()) == 281241
    assert sum(k for _, k in LIBRISPEECH_960.values()) == 2338
    assert scaled(LIBRISPEECH_960, 0.01)["train-clean-100"] == (285, 3)
    assert scaled({"a": (10, 1)}, 0.01) == {"a": (1, 1)}


def test_opening_counts_subsets_and_speakers_of_the_first_batches(tmp_path):
    speakers = write_simulated(tmp_path, SHAPE, seed=0)
    cuts = load_cuts(tmp_path, "clean") + load_cuts(tmp_path, "other")  # in order: clean first
    sampler = DynamicCutSampler(cuts, max_cuts=10, world_size=1, rank=0)
    first = opening(sampler, epoch=0, num_batches=3, speakers=speakers)
    assert len(first.cut_ids) == 3 and all(len(b) == 10 for b in first.cut_ids)
    assert first.counts == {"clean": 30, "other": 0} and first.shares["clean"] == 1.0
    assert first.num_speakers == 1  # 30 cuts per speaker, in id order
