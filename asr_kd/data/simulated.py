"""A LibriSpeech-shaped training manifest without audio, to see what the sampler does at scale.

:func:`write_simulated` writes a data dir (:class:`~asr_kd.data.layout.DataDir`) whose training
subsets have the shape of LibriSpeech 960 h (:data:`LIBRISPEECH_960`: cuts and speakers per
subset), cut ids ``<speaker>-<chapter>-<utt>`` sorted as ``asr-kd-prepare`` sorts them (speaker
blocks), and durations from :func:`librispeech_duration`. A cut is a ``MonoCut`` as prepare writes
it, so its line and its objects have a prepared cut's size (about 1 KB of JSON): a ``Recording``
whose source points nowhere, a supervision with a transcript of LibriSpeech's length (about 15
characters a second) and 80-bin fbank ``Features`` in an empty file (nothing reads them: samplers
read ids and durations). A char tokenizer in ``lang/`` lets
:class:`~asr_kd.data.datamodule.AsrDataModule` open the dir.

:func:`opening` looks at the first batches of an epoch of a sampler: which subsets and how many
speakers they hold.

Usage:
    speakers = write_simulated("SIM", LIBRISPEECH_960, seed=0)   # speaker -> subset
    dm = AsrDataModule("SIM", train_subset=list(LIBRISPEECH_960), max_duration=600.0)
    first = opening(dm.train_sampler(), epoch=0, num_batches=58, speakers=speakers)
    first.shares, first.num_speakers
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from asr_kd.data.layout import DataDir
from asr_kd.data.tokenizer import Tokenizer

__all__ = [
    "LIBRISPEECH_960",
    "Opening",
    "librispeech_duration",
    "opening",
    "scaled",
    "speaker_of",
    "write_simulated",
]

# LibriSpeech's training subsets: (utterances, speakers), from its published statistics.
LIBRISPEECH_960 = {
    "train-clean-100": (28539, 251),
    "train-clean-360": (104014, 921),
    "train-other-500": (148688, 1166),
}

_SAMPLE_RATE = 16000
_TEXT = "THE QUICK BROWN FOX JUMPS OVER A LAZY DOG AND " * 20  # 920 characters to cut from


def librispeech_duration(rng: random.Random) -> float:
    """One utterance length in seconds, rounded to 10 ms, from a mixture shaped like
    LibriSpeech's training utterances (segmented up to 35 s, most of them 10-16 s): 70 % around
    14.5 s (sd 1, within 10-17 s), 29 % uniform over 1-12 s, 1 % uniform over 17-35 s. Mean
    about 12.3 s."""
    u = rng.random()
    if u < 0.01:
        seconds = rng.uniform(17.0, 35.0)
    elif u < 0.30:
        seconds = rng.uniform(1.0, 12.0)
    else:
        seconds = min(17.0, max(10.0, rng.gauss(14.5, 1.0)))
    return round(seconds, 2)


def scaled(shape: Mapping[str, tuple[int, int]], factor: float) -> dict[str, tuple[int, int]]:
    """``shape`` with cuts and speakers times ``factor`` (at least one speaker and one cut each)."""
    return {
        s: (max(1, round(n * factor)), max(1, round(k * factor))) for s, (n, k) in shape.items()
    }


def speaker_of(cut_id: str) -> str:
    """``"103-1240-0003"`` -> ``"103"``: LibriSpeech ids start with the speaker."""
    return cut_id.split("-", 1)[0]


def _cut(cut_id: str, duration: float, features_file: Path):
    from lhotse import AudioSource, Features, MonoCut, Recording, SupervisionSegment

    num_samples = round(duration * _SAMPLE_RATE)
    source = AudioSource(type="file", channels=[0], source=f"/nonexistent/{cut_id}.flac")
    recording = Recording(
        id=cut_id,
        sources=[source],
        sampling_rate=_SAMPLE_RATE,
        num_samples=num_samples,
        duration=num_samples / _SAMPLE_RATE,
    )
    supervision = SupervisionSegment(
        id=cut_id,
        recording_id=cut_id,
        start=0.0,
        duration=recording.duration,
        channel=0,
        text=_TEXT[: round(15 * duration)].strip(),
        language="English",
        speaker=speaker_of(cut_id),
    )
    features = Features(
        type="kaldi-fbank",
        num_frames=round(recording.duration * 100),
        num_features=80,
        frame_shift=0.01,
        sampling_rate=_SAMPLE_RATE,
        start=0.0,
        duration=recording.duration,
        storage_type="lilcom_chunky",
        storage_path=str(features_file),
        storage_key="0,0",
    )
    return MonoCut(
        id=cut_id,
        start=0.0,
        duration=recording.duration,
        channel=0,
        recording=recording,
        supervisions=[supervision],
        features=features,
    )


def _cut_ids(speakers: list[int], num_cuts: int) -> list[str]:
    """``num_cuts`` ids spread evenly over ``speakers``, two chapters each, sorted as strings."""
    ids = []
    for index, speaker in enumerate(speakers):
        count = num_cuts // len(speakers) + (index < num_cuts % len(speakers))
        for utt in range(count):
            chapter = speaker * 10 + utt % 2
            ids.append(f"{speaker}-{chapter}-{utt // 2:04d}")
    return sorted(ids)


def write_simulated(
    root: str | Path, shape: Mapping[str, tuple[int, int]], seed: int = 0
) -> dict[str, str]:
    """Write ``root/cuts_<subset>.jsonl.gz`` for each ``subset: (cuts, speakers)`` of ``shape``
    (features in an empty ``root/feats/<subset>/feats-0.lca``) and a char tokenizer; returns speaker id -> subset (speaker ids are distinct across subsets,
    as in LibriSpeech)."""
    from lhotse import CutSet

    data = DataDir(root)
    data.root.mkdir(parents=True, exist_ok=True)
    Tokenizer.char().save(data.lang)
    rng = random.Random(seed)
    total_speakers = sum(k for _, k in shape.values())
    pool = rng.sample(range(10, 10 + 10 * total_speakers), total_speakers)
    subset_of: dict[str, str] = {}
    total = sum(n for n, _ in shape.values())
    with tqdm(total=total, desc="simulate", unit="cut", leave=False) as progress:
        for subset, (num_cuts, num_speakers) in shape.items():
            speakers, pool = sorted(pool[:num_speakers]), pool[num_speakers:]
            subset_of.update((str(s), subset) for s in speakers)
            features_file = data.feats(subset).resolve() / "feats-0.lca"
            features_file.parent.mkdir(parents=True, exist_ok=True)
            features_file.touch()
            with CutSet.open_writer(data.cuts(subset)) as writer:
                for cut_id in _cut_ids(speakers, num_cuts):
                    writer.write(_cut(cut_id, librispeech_duration(rng), features_file))
                    progress.update()
    return subset_of


@dataclass
class Opening:
    """The first batches of one epoch.

    Attributes:
        cut_ids: the cuts of each batch, in order.
        counts: subset -> cuts of it among them.
        num_speakers: distinct speakers among them.
    """

    cut_ids: list[list[str]]
    counts: dict[str, int]
    num_speakers: int

    @property
    def shares(self) -> dict[str, float]:
        """subset -> fraction of the cuts."""
        total = sum(self.counts.values())
        return {s: n / total for s, n in self.counts.items()}


def opening(sampler, epoch: int, num_batches: int, speakers: Mapping[str, str]) -> Opening:
    """The first ``num_batches`` batches of ``sampler``'s epoch ``epoch``; ``speakers`` maps a
    speaker id to its subset (:func:`write_simulated`)."""
    sampler.set_epoch(epoch)
    batches: list[list[str]] = []
    for batch in sampler:
        batches.append([c.id for c in batch])
        if len(batches) == num_batches:
            break
    ids = [i for b in batches for i in b]
    counts = Counter(speakers[speaker_of(i)] for i in ids)
    counts = {s: counts.get(s, 0) for s in dict.fromkeys(speakers.values())}
    return Opening(batches, counts, len({speaker_of(i) for i in ids}))
