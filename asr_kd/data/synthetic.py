"""asr-kd-synth: a synthetic speech corpus written in the exact LibriSpeech layout.

Speech comes from eSpeak NG (:mod:`asr_kd.data.espeak`), text from a source of
:mod:`asr_kd.data.synth_text` (``text=sentences``: real sentences of Jane Austen's novels, books
split by subset; ``text=words``: the top-N wordfreq words, independently drawn). A speaker is one accent + voice variant + pitch + rate; the
pool of such speakers is shuffled with the seed and cut into disjoint slices, one per subset, so
dev/test speakers never occur in train. Each utterance gets its own RNG seeded from
``(seed, subset, index)`` and is rendered as: speech -> speed change -> optional reverberation ->
optional additive noise (white, pink or babble) at a random SNR -> random gain -> 16-bit FLAC.
The same seed gives a byte-identical corpus, whatever the number of worker processes.

Layout (as LibriSpeech):

    <out_dir>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac
    <out_dir>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    <out_dir>/LibriSpeech/SPEAKERS.TXT      (ID | SEX | SUBSET | MINUTES | NAME = voice settings)
    <out_dir>/text_stats.json               training vocabulary, dev/test OOV against it, source
    <out_dir>/librispeech-lm-norm.txt.gz    LM text: training books (or transcripts) only

Usage:
    asr-kd-synth out_dir=data/synth hours.train=1.0 hours.dev=0.1 hours.test=0.1 seed=0
    asr-kd-synth out_dir=data/synth speakers.train=40 vocab_size=500 noise_prob=0.8 snr_db=[5,30]
    asr-kd-synth out_dir=data/synth text=words vocab_size=200     # independent wordfreq words
    asr-kd-synth out_dir=data/synth 'hours={train-clean:1.0,test-clean:0.1}' \\
        'speakers={train-clean:32,test-clean:8}'
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from asr_kd.config import save_config
from asr_kd.data.espeak import EspeakEngine, SpeechRequest, variant_gender
from asr_kd.data.features import SAMPLE_RATE
from asr_kd.data.librispeech import subset_table
from asr_kd.data.synth_text import (
    build_text_source,
    build_vocabulary,
    text_stats,
    write_lm_text,
)
from asr_kd.errors import ConfigError, OutputExistsError

__all__ = [
    "Speaker",
    "SynthSettings",
    "assign_speakers",
    "build_vocabulary",
    "run",
    "synthesize_corpus",
]

_MARKER = ".asr_kd_synth"  # marks a LibriSpeech dir we wrote, so we may overwrite its subsets
TEXT_STATS = "text_stats.json"  # under out_dir: vocabulary, OOV per subset, the text source
LM_TEXT = "librispeech-lm-norm.txt.gz"  # under out_dir: LM text (openslr 11's name)
_INITIAL_SECONDS_PER_UTT = 4.0  # first guess, to size the first batch of work
_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}{postfix}]"


@dataclass(frozen=True)
class SynthSettings:
    """Everything that shapes the corpus (the Hydra config minus ``out_dir``); see conf/synth.yaml."""

    hours: dict[str, float]
    speakers: dict[str, int]
    seed: int = 0
    vocab_size: int = 400
    freq_power: float = 0.7
    words_per_utt: tuple[int, int] = (4, 14)
    chapters_per_speaker: int = 2
    accents: tuple[str, ...] = ("en-us", "en")
    variants: tuple[str, ...] = ("m1", "f1")
    pitches: tuple[int, ...] = (50,)
    rates: tuple[int, ...] = (170,)
    speed: tuple[float, float] = (0.9, 1.1)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (15.0, 40.0)
    noise_types: tuple[str, ...] = ("white", "pink", "babble")
    reverb_prob: float = 0.2
    rt60_s: tuple[float, float] = (0.1, 0.4)
    num_workers: int = 2
    text: str = "words"  # a key of asr_kd.data.synth_text.TEXT_SOURCES
    books: dict = field(default_factory=dict)  # text=sentences: role -> book names
    text_file: str | None = None  # text=sentences: book<TAB>SENTENCE file; None: the shipped one

    def __post_init__(self) -> None:
        missing = [s for s in self.hours if self.hours[s] > 0 and s not in self.speakers]
        if missing:
            raise ConfigError(f"no speaker count for subsets {missing}: set speakers.<subset>=N")
        unknown = set(self.noise_types) - {"white", "pink", "babble"}
        if unknown:
            raise ConfigError(
                f"unknown noise_types {sorted(unknown)}; expected white, pink, babble"
            )
        if not 1 <= self.words_per_utt[0] <= self.words_per_utt[1]:
            raise ConfigError(
                f"words_per_utt {self.words_per_utt} must be [min, max] with min >= 1"
            )


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an eSpeak voice (``accent+variant``) at a fixed pitch and rate."""

    speaker_id: int
    subset: str
    accent: str
    variant: str
    pitch: int
    rate: int

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"

    @property
    def name(self) -> str:
        return f"{self.voice} pitch={self.pitch} rate={self.rate}"


@dataclass(frozen=True)
class _Written:
    """One utterance as written by a worker."""

    subset: str
    index: int
    utt_id: str
    path: str  # relative to the LibriSpeech root
    text: str
    num_samples: int


def assign_speakers(settings: SynthSettings) -> dict[str, list[Speaker]]:
    """Disjoint speaker lists per subset, cut from the seed-shuffled pool of all combinations."""
    pool = list(product(settings.accents, settings.variants, settings.pitches, settings.rates))
    order = np.random.default_rng([settings.seed, 0x5EED]).permutation(len(pool))
    wanted = {s: settings.speakers[s] for s, h in settings.hours.items() if h > 0}
    if sum(wanted.values()) > len(pool):
        raise ConfigError(
            f"{sum(wanted.values())} speakers wanted {wanted}, but accents x variants x pitches x "
            f"rates gives only {len(pool)}"
        )
    by_subset, next_slot = {}, 0
    for subset, count in wanted.items():
        by_subset[subset] = [
            Speaker(1000 + k, subset, *pool[order[k]]) for k in range(next_slot, next_slot + count)
        ]
        next_slot += count
    return by_subset


def _utterance_rng(seed: int, subset: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(subset.encode()), index])


# --- rendering (runs in the worker processes) -------------------------------------------------


def _speed_resample(audio: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """Speed change as ``sox speed`` (tempo and pitch together) folded into the resampling."""
    return soxr.resample(audio, sample_rate * speed, SAMPLE_RATE).astype(np.float32)


def _reverberate(audio: np.ndarray, rng: np.random.Generator, rt60_s: float) -> np.ndarray:
    """Convolve with a synthetic room response: a direct path plus exponentially decaying noise."""
    num_taps = max(int(rt60_s * SAMPLE_RATE), 2)
    t = np.arange(num_taps) / SAMPLE_RATE
    rir = rng.standard_normal(num_taps) * np.exp(-6.9 * t / rt60_s) * 0.3  # -60 dB at rt60
    rir[0] = 1.0
    n = len(audio) + num_taps - 1
    wet = np.fft.irfft(np.fft.rfft(audio, n) * np.fft.rfft(rir, n), n)[: len(audio)]
    return wet.astype(np.float32)


def _pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))  # 1/f power
    return np.fft.irfft(spectrum, num_samples)


def _babble(talkers: Sequence[np.ndarray], num_samples: int, rng: np.random.Generator):
    """Sum of other talkers, each looped from a random offset to ``num_samples``."""
    mix = np.zeros(num_samples)
    for talker in talkers:
        looped = np.tile(talker, num_samples // max(len(talker), 1) + 2)
        start = int(rng.integers(0, max(len(talker), 1)))
        mix += looped[start : start + num_samples]
    return mix


def _mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    speech_power = float(np.mean(speech**2)) + 1e-12
    noise_power = float(np.mean(noise**2)) + 1e-12
    scale = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (speech + scale * noise).astype(np.float32)


class _Worker:
    """Per-process state: the eSpeak library, the settings, speakers and text source."""

    def __init__(self, settings, root, speakers, text_source) -> None:
        self.settings, self.root, self.speakers = settings, Path(root), speakers
        self.text_source = text_source
        self.engine = EspeakEngine()

    def _babble_requests(self, subset: str, rng: np.random.Generator) -> list[SpeechRequest]:
        s = self.settings
        return [
            SpeechRequest(
                f"{s.accents[rng.integers(len(s.accents))]}+{s.variants[rng.integers(len(s.variants))]}",
                self.text_source.babble(subset, rng),
                seed=int(rng.integers(2**31)),
                rate=int(s.rates[rng.integers(len(s.rates))]),
                pitch=int(s.pitches[rng.integers(len(s.pitches))]),
            )
            for _ in range(int(rng.integers(3, 6)))
        ]

    def render(
        self, speaker: Speaker, index: int, rng: np.random.Generator
    ) -> tuple[str, np.ndarray]:
        """Utterance ``index`` of the speaker's subset: its text and ``(N,)`` int16 samples."""
        s = self.settings
        text = self.text_source.utterance(speaker.subset, index, rng)
        noise_type = s.noise_types[rng.integers(len(s.noise_types))] if s.noise_types else ""
        add_noise = bool(s.noise_types) and rng.random() < s.noise_prob
        seed = int(rng.integers(2**31))
        requests = [SpeechRequest(speaker.voice, text, speaker.rate, speaker.pitch, seed)]
        if add_noise and noise_type == "babble":
            requests += self._babble_requests(speaker.subset, rng)
        spoken = [a.astype(np.float32) / 32768.0 for a in self.engine.speak(requests)]
        speed = rng.uniform(*s.speed)
        audio = _speed_resample(spoken[0], self.engine.sample_rate, speed)
        lead, tail = (int(rng.uniform(0.05, 0.3) * SAMPLE_RATE) for _ in range(2))
        audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
        if rng.random() < s.reverb_prob:
            audio = _reverberate(audio, rng, rng.uniform(*s.rt60_s))
        if add_noise:
            n = len(audio)
            if noise_type == "white":
                noise = rng.standard_normal(n)
            elif noise_type == "pink":
                noise = _pink_noise(n, rng)
            else:
                talkers = [_speed_resample(a, self.engine.sample_rate, 1.0) for a in spoken[1:]]
                noise = _babble(talkers, n, rng)
            audio = _mix_at_snr(audio, noise, rng.uniform(*s.snr_db))
        peak = float(np.max(np.abs(audio))) + 1e-9
        audio = audio * (rng.uniform(0.3, 0.9) / peak)
        return text.upper(), np.round(audio * 32767).astype(np.int16)

    def write(self, subset: str, index: int) -> _Written:
        speakers = self.speakers[subset]
        speaker = speakers[index % len(speakers)]
        per_speaker = index // len(speakers)  # round robin: a prefix of indices is a valid corpus
        chapter = speaker.speaker_id * 10 + per_speaker % self.settings.chapters_per_speaker
        utt_id = f"{speaker.speaker_id}-{chapter}-{per_speaker // self.settings.chapters_per_speaker:04d}"
        text, samples = self.render(
            speaker, index, _utterance_rng(self.settings.seed, subset, index)
        )
        rel = f"{subset}/{speaker.speaker_id}/{chapter}/{utt_id}.flac"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return _Written(subset, index, utt_id, rel, text, len(samples))


_WORKER: _Worker | None = None


def _init_worker(*args) -> None:
    global _WORKER
    _WORKER = _Worker(*args)


def _write_one(task: tuple[str, int]) -> _Written:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.write(*task)


# --- orchestration (main process) --------------------------------------------------------------


def _synthesize_subset(
    pool, root: Path, subset: str, target_s: float, progress: tqdm
) -> list[_Written]:
    """Utterances ``0, 1, 2, ...`` of ``subset`` until their total reaches ``target_s`` seconds.

    Work goes out in batches sized from the mean duration so far; what a batch wrote past the
    target is deleted, so the corpus is the same prefix whatever the batch sizes were.
    """
    kept: list[_Written] = []
    surplus: list[_Written] = []
    total, next_index = 0.0, 0
    while total < target_s:
        mean_s = total / len(kept) if kept else _INITIAL_SECONDS_PER_UTT
        batch = int(np.clip(np.ceil((target_s - total) / mean_s), 2, 128))
        tasks = [(subset, i) for i in range(next_index, next_index + batch)]
        next_index += batch
        for written in pool.imap(_write_one, tasks, chunksize=2):
            if total >= target_s:
                surplus.append(written)
                continue
            seconds = written.num_samples / SAMPLE_RATE
            kept.append(written)
            total += seconds
            # The last utterance of a subset overshoots its target; tqdm drops a total that n
            # passes (and the bar's format then fails on None), so grow the total instead.
            progress.total = max(progress.total, progress.n + seconds)
            progress.update(seconds)
    for written in surplus:
        path = root / written.path
        path.unlink()
        for folder in (path.parent, path.parent.parent):  # chapter, speaker: drop if now empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return kept


def _write_transcripts(root: Path, utterances: Sequence[_Written]) -> None:
    by_chapter: dict[Path, list[_Written]] = defaultdict(list)
    for u in utterances:
        by_chapter[(root / u.path).parent].append(u)
    for chapter_dir, utts in by_chapter.items():
        speaker, chapter = utts[0].utt_id.split("-")[:2]
        lines = "".join(f"{u.utt_id} {u.text}\n" for u in sorted(utts, key=lambda u: u.utt_id))
        (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text(lines)


def _write_speakers_txt(root: Path, speakers: dict, utterances: Sequence[_Written]) -> None:
    seconds: dict[str, float] = defaultdict(float)
    for u in utterances:
        seconds[u.utt_id.split("-")[0]] += u.num_samples / SAMPLE_RATE
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME\n"]
    for subset_speakers in speakers.values():
        for spk in subset_speakers:
            minutes = seconds.get(str(spk.speaker_id), 0.0) / 60
            sex = variant_gender(spk.variant)
            lines.append(
                f"{spk.speaker_id:<5}| {sex} | {spk.subset:<17}| {minutes:5.2f} | {spk.name}\n"
            )
    (root / "SPEAKERS.TXT").write_text("".join(lines))


def _prepare_root(root: Path, subsets: Sequence[str]) -> None:
    """Create ``root``; clear the subsets we are about to write, but only in a corpus we wrote."""
    root.mkdir(parents=True, exist_ok=True)
    existing = [root / s for s in subsets if (root / s).exists()]
    if existing and not (root / _MARKER).exists():
        raise OutputExistsError(
            f"{existing[0]} exists and {root} was not written by asr-kd-synth (no {_MARKER}); "
            "refusing to overwrite it: choose another out_dir"
        )
    for path in existing:
        shutil.rmtree(path)
    (root / _MARKER).write_text("written by asr-kd-synth\n")


def _check_written(root: Path, utterances: Sequence[_Written]) -> float:
    """Total seconds according to the FLAC headers on disk; must equal what the workers wrote."""
    on_disk = sum(sf.info(str(root / u.path)).frames for u in utterances)
    reported = sum(u.num_samples for u in utterances)
    if on_disk != reported:
        raise RuntimeError(f"{root}: FLAC headers hold {on_disk} samples, workers wrote {reported}")
    return on_disk / SAMPLE_RATE


def synthesize_corpus(out_dir: str | Path, settings: SynthSettings) -> dict:
    """Write the corpus under ``<out_dir>/LibriSpeech``; returns the summary printed by the CLI.

    Returns ``{"root": str, "subsets": {name: {"speakers", "utterances", "seconds", "hours"}},
    "total_seconds": float}``, the seconds read back from the written FLAC headers.
    """
    root = Path(out_dir) / "LibriSpeech"
    subsets = [s for s, h in settings.hours.items() if h > 0]
    _prepare_root(root, subsets)
    speakers = assign_speakers(settings)
    text_source = build_text_source(settings)
    init_args = (settings, str(root), speakers, text_source)
    total_target = sum(settings.hours[s] * 3600 for s in subsets)
    written: dict[str, list[_Written]] = {}
    # spawn: workers import only numpy/soundfile/soxr, so the per-utterance fork stays cheap.
    context = multiprocessing.get_context("spawn")
    with (
        context.Pool(settings.num_workers, _init_worker, init_args) as pool,
        tqdm(total=round(total_target), desc="asr-kd-synth", bar_format=_BAR) as bar,
    ):
        for subset in subsets:
            bar.set_postfix_str(subset)
            target_s = settings.hours[subset] * 3600
            written[subset] = _synthesize_subset(pool, root, subset, target_s, bar)
        bar.total = max(bar.total, bar.n)  # the last utterance overshoots the target a little
        bar.refresh()
    summary = {"root": str(root), "subsets": {}, "total_seconds": 0.0}
    for subset in subsets:
        _write_transcripts(root, written[subset])
        seconds = _check_written(root, written[subset])
        summary["subsets"][subset] = {
            "speakers": len({u.utt_id.split("-")[0] for u in written[subset]}),
            "utterances": len(written[subset]),
            "seconds": round(seconds, 3),
            "hours": round(seconds / 3600, 4),
            "target_hours": settings.hours[subset],
        }
        summary["total_seconds"] += seconds
    _write_speakers_txt(root, speakers, [u for us in written.values() for u in us])
    summary["text"] = _write_text_outputs(Path(out_dir), text_source, written)
    return summary


def _write_text_outputs(out_dir: Path, text_source, written: dict[str, list[_Written]]) -> dict:
    """``text_stats.json`` (vocabulary, OOV per subset, the source) and the LM text."""
    transcripts = {subset: [u.text for u in utts] for subset, utts in written.items()}
    stats = {**text_stats(transcripts), "source": text_source.summary()}
    train = [
        t for subset, texts in transcripts.items() if subset.startswith("train") for t in texts
    ]
    stats["lm_text"] = {
        "path": LM_TEXT,
        "sentences": write_lm_text(out_dir / LM_TEXT, text_source.lm_sentences(train)),
    }
    (out_dir / TEXT_STATS).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def _print_summary(summary: dict) -> None:
    print(f"\nasr-kd-synth: {summary['root']}")
    columns = [("speakers", "d"), ("utterances", "d"), ("hours", ".3f"), ("target_hours", ".3f")]
    print(subset_table(summary["subsets"], columns, {"target_hours": "target"}))
    total = summary["total_seconds"]
    print(
        f"total written audio: {total:.1f} s ({total / 3600:.3f} h), checked against FLAC headers"
    )
    text = summary["text"]
    oov = ", ".join(
        f"{subset} {entry['oov_percent']:.2f} %"
        for subset, entry in text["subsets"].items()
        if "oov_percent" in entry
    )
    print(
        f"text={text['source']['text']}: training transcripts hold {text['train_vocabulary']} "
        f"distinct words; OOV against them: {oov or 'no dev/test subset'}; LM text: "
        f"{text['lm_text']['sentences']} sentences in {text['lm_text']['path']} ({TEXT_STATS})"
    )


def settings_from_config(cfg: DictConfig) -> SynthSettings:
    """The plain settings from a composed ``conf/synth.yaml`` (lists become tuples)."""
    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("out_dir")
    values.pop("hydra", None)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return SynthSettings(**values)


def run(cfg: DictConfig) -> dict:
    """Synthesise the corpus described by ``cfg`` (conf/synth.yaml); returns the summary."""
    out_dir = Path(cfg.out_dir)
    settings = settings_from_config(cfg)
    save_config(cfg, out_dir)
    summary = synthesize_corpus(out_dir, settings)
    (out_dir / "synth_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary)
    return summary
