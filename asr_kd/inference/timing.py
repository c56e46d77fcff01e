"""Timed decoding passes over a test set: hypotheses, references and the RTF that produced them.

- :func:`decode_batched`: CTC over padded batches (torch, any device), full context or the
  chunk-masked forward of a streaming row, several searches on the same log-probs;
  :func:`decode_full_batched`: one search, full context.
- :func:`decode_one_at_a_time`: one :class:`~asr_kd.inference.factory.Decoder` call per
  utterance, batch size 1 on CPU with a fixed torch thread count, after warm-up.

The timers cover the model and the greedy search on precomputed fbank (data loading and
feature extraction are outside them); audio seconds are fbank frames x 10 ms. Besides wall-clock
seconds (RTF) they count this process's CPU seconds (all threads) and, where the machine exposes
readable RAPL counters, the CPU packages' joules (:class:`asr_kd.metrics.RaplCounters`):
``Decoded.cpu_s_per_audio_h`` and ``joules_per_audio_h`` (None, ``energy_note`` "n/a (no RAPL)").
A model that reads audio (``model.reads_audio``: a transformers one) reads the batches' audio,
and its timers cover its own feature extractor too (that is part of the model: its
normalisation or mel); audio seconds are samples / 16 kHz (:func:`audio_utterances`).

Usage:
    batches = dm.dataloader("test", shuffle=False)          # AsrDataModule batches
    batched = decode_full_batched(loaded, batches, "cpu", "teacher full")
    timed = decode_one_at_a_time(make_decoder("torch", loaded=loaded), utterances(batches),
                                 threads=1, warmup_utts=2, max_utts=None, desc="teacher", total=None)
    print(timed.rtf, timed.cpu_s_per_audio_h, timed.hyps["1-2-0000"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from asr_kd.data.features import FRAME_SHIFT_MS, SAMPLE_RATE
from asr_kd.metrics import RaplCounters, Timer, per_audio_hour, real_time_factor
from asr_kd.models.loading import LoadedModel

__all__ = [
    "Decoded",
    "Utterance",
    "audio_utterances",
    "decode_batched",
    "decode_full_batched",
    "decode_one_at_a_time",
    "utterances",
]


@dataclass
class Utterance:
    """One test utterance: raw fbank ``feats`` (T, 80) (or, from :func:`audio_utterances`, its
    (N,) 16 kHz samples, ``row_s`` = 1 / 16000) and its normalised reference text."""

    cut_id: str
    text: str
    feats: torch.Tensor
    row_s: float = FRAME_SHIFT_MS / 1000.0  # seconds of audio per row of ``feats``

    @property
    def audio_s(self) -> float:
        return self.feats.shape[0] * self.row_s


@dataclass
class Decoded:
    """Hypotheses of one decoding pass, keyed by cut id, with the timing that produced them:
    wall ``seconds``, process ``cpu_seconds``, CPU-package ``joules`` (None: ``energy_note``)."""

    hyps: dict[str, str]
    refs: dict[str, str]
    seconds: float
    audio_s: float
    cpu_seconds: float | None = None
    joules: float | None = None
    energy_note: str | None = None

    @classmethod
    def timed_by(cls, timer: Timer, hyps: dict, refs: dict, audio_s: float) -> Decoded:
        return cls(
            hyps, refs, timer.seconds, audio_s, timer.cpu_seconds, timer.joules, timer.energy_note
        )

    @property
    def rtf(self) -> float:
        return real_time_factor(self.seconds, self.audio_s)

    @property
    def cpu_s_per_audio_h(self) -> float | None:
        """Process CPU-seconds (all threads) per hour of audio."""
        return None if self.cpu_seconds is None else per_audio_hour(self.cpu_seconds, self.audio_s)

    @property
    def joules_per_audio_h(self) -> float | None:
        """CPU-package joules per hour of audio (whole machine), None without RAPL."""
        return None if self.joules is None else per_audio_hour(self.joules, self.audio_s)


def utterances(batches: Iterable[dict]) -> Iterator[Utterance]:
    """The utterances of ``AsrDataModule`` batches (``feats`` (B, T, F), ``feat_lens`` (B,),
    ``cut_ids``, ``texts``), padding cut off, in batch order."""
    for batch in batches:
        for i, cut_id in enumerate(batch["cut_ids"]):
            feats = batch["feats"][i, : int(batch["feat_lens"][i])]
            yield Utterance(cut_id, batch["texts"][i], feats)


def audio_utterances(batches: Iterable[dict]) -> Iterator[Utterance]:
    """The utterances of ``with_audio`` batches as (N,) samples (``audio``, ``audio_lens``)."""
    for batch in batches:
        for i, cut_id in enumerate(batch["cut_ids"]):
            samples = batch["audio"][i, : int(batch["audio_lens"][i])]
            yield Utterance(cut_id, batch["texts"][i], samples, 1.0 / SAMPLE_RATE)


def _batch_log_probs(loaded, batch: dict, device: str, chunk_size, left_chunks):
    """(B, T', V) log-probs and (B,) valid frames of one batch, and its seconds of audio: fbank
    for our models (at ``chunk_size`` / ``left_chunks``: the chunk-masked full forward, equal
    to ``forward_chunk``), audio for one that ``reads_audio``."""
    if getattr(loaded.model, "reads_audio", False):
        inputs, audio_s = ("audio", "audio_lens"), float(batch["audio_lens"].sum()) / SAMPLE_RATE
        context = {}
    else:
        inputs = ("feats", "feat_lens")
        audio_s = float(batch["feat_lens"].sum()) * FRAME_SHIFT_MS / 1000.0
        context = (
            {} if chunk_size is None else {"chunk_size": chunk_size, "left_chunks": left_chunks}
        )
    log_probs, out_lens = loaded.model(*(batch[key].to(device) for key in inputs), **context)[:2]
    return log_probs, out_lens, audio_s


@contextmanager
def _num_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(desc: str, total: int | None):
    return tqdm(desc=desc, total=total, unit="utt", dynamic_ncols=True, leave=False)


@torch.inference_mode()
def decode_full_batched(
    loaded: LoadedModel, batches, device: str, desc: str, search=None
) -> Decoded:
    """Full-context CTC over batches, greedy unless ``search`` (a ``CtcSearch``) is given; the
    timer covers forward + search on ``device`` (a beam search runs on the CPU)."""
    return decode_batched(loaded, batches, device, desc, {"": search})[""]


@torch.inference_mode()
def decode_batched(
    loaded: LoadedModel,
    batches,
    device: str,
    desc: str,
    searches: Mapping[str, Any],
    chunk_size: int | None = None,
    left_chunks: int = -1,
) -> dict[str, Decoded]:
    """One batched forward per batch on ``device``, each of ``searches`` (name -> a
    ``CtcSearch``, or None: ``loaded.decode_ids``, greedy) on its log-probs -> name -> Decoded.

    ``chunk_size`` (encoder frames, None: full context) and ``left_chunks``: the chunk-masked
    full forward, which equals the streaming ``forward_chunk`` (to 1e-4, the model's contract),
    so a streaming row's transcripts come from batches. Greedy is vectorised over the batch; a
    beam search runs per utterance on the CPU. Each Decoded's seconds are the forward's plus its
    own search's (the first batch is a warm-up, untimed).
    """
    loaded.model.to(device)
    hyps = {name: {} for name in searches}
    refs, audio_s, forward = {}, 0.0, Timer()
    timers = {name: Timer() for name in searches}
    with _progress(desc, None) as bar:
        for n, batch in enumerate(batches):
            if n == 0:  # warm-up, untimed (allocator growth and kernel choice are one-off
                # costs) on the batch's first two utterances, not a second forward of all of it
                warm = {k: v[:2] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                _batch_log_probs(loaded, warm, device, chunk_size, left_chunks)
            with forward:
                log_probs, lens, seconds = _batch_log_probs(
                    loaded, batch, device, chunk_size, left_chunks
                )
                if device != "cpu":
                    torch.cuda.synchronize()
            for name, search in searches.items():
                texts_of = loaded.decode_ids if search is None else search.batch_texts
                with timers[name]:
                    texts = texts_of(log_probs, lens)
                hyps[name].update(zip(batch["cut_ids"], texts, strict=True))
            refs.update(zip(batch["cut_ids"], batch["texts"], strict=True))
            audio_s += seconds
            bar.update(len(batch["cut_ids"]))
    loaded.model.to("cpu")
    return {
        name: Decoded(
            hyps[name],
            dict(refs),
            forward.seconds + timers[name].seconds,
            audio_s,
            forward.cpu_seconds + timers[name].cpu_seconds,
            energy_note=forward.energy_note,
        )
        for name in searches
    }


@torch.inference_mode()
def decode_one_at_a_time(
    decode: Callable[[torch.Tensor], str],
    utts: Iterable[Utterance],
    *,
    threads: int,
    warmup_utts: int,
    max_utts: int | None,
    desc: str,
    total: int | None,
) -> Decoded:
    """Batch size 1 on CPU with ``threads`` torch threads, one ``decode(utt.feats)`` per
    utterance (a :class:`~asr_kd.inference.factory.Decoder`), the first ``max_utts`` (None: all).

    The first ``warmup_utts`` utterances are decoded once untimed before their timed run, so
    one-off costs (allocator growth, kernel selection) stay out of the RTF. The same timed
    spans give CPU seconds and, where RAPL is readable, joules (``Decoded``).
    """
    hyps, refs, timer, audio_s = {}, {}, Timer(energy=RaplCounters()), 0.0
    with _num_threads(threads), _progress(desc, total) as bar:
        for n, utt in enumerate(utts):
            if max_utts is not None and n >= max_utts:
                break
            if n < warmup_utts:
                decode(utt.feats)
            with timer:
                hyps[utt.cut_id] = decode(utt.feats)
            refs[utt.cut_id] = utt.text
            audio_s += utt.audio_s
            bar.update(1)
    return Decoded.timed_by(timer, hyps, refs, audio_s)
