"""The reported error rates, timing and cost: WER/CER (with sub/del/ins), RTF, CPU and energy.

Every figure asr_kd reports carries the same name everywhere (DESIGN.md): ``wer``, ``cer``,
``sub``, ``del``, ``ins`` (percent), ``rtf`` (processing seconds / audio seconds),
``latency_ms`` (algorithmic), ``params``, ``macs_per_audio_s``, ``model_mb``. Error rates come
from jiwer 4 (``process_words`` / ``process_characters``) and are computed here (training's dev
WER uses them too, so this module imports nothing of asr_kd); the model figures are measured
beside the model, in :mod:`asr_kd.models.profile`.

Substitution, deletion and insertion rates are percentages of the number of *reference* words,
so ``sub + del + ins == wer`` (up to rounding), as in Kaldi's ``compute-wer`` and sclite.

Usage:
    rates = error_rates(["THE CAT SAT"], ["THE BAT SAT DOWN"])
    rates["wer"], rates["sub"], rates["ins"]          # 66.67, 33.33, 33.33
    timer = Timer()
    with timer:
        model(feats, feat_lens)
    real_time_factor(timer.seconds, audio_seconds)
    error_split(refs, teacher_hyps, student_hyps)    # the student's errors: shared, own, fixed
    per_audio_hour(timer.cpu_seconds, audio_seconds)  # CPU-seconds per audio hour

    timer = Timer(energy=RaplCounters())              # + RAPL package energy, where readable
    ...
    timer.joules, timer.energy_note                   # None, "n/a (no RAPL)" on most machines
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

import jiwer

__all__ = [
    "POWERCAP_ROOT",
    "RaplCounters",
    "Timer",
    "char_error_rate",
    "error_rates",
    "error_split",
    "hotword_scores",
    "per_audio_hour",
    "real_time_factor",
    "word_error_rate",
]


def _check_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(
            f"{len(references)} references but {len(hypotheses)} hypotheses: expected one "
            "hypothesis per reference"
        )
    if not references:
        raise ValueError("no utterances to score: expected at least one reference")


def _rates(
    kind: str, num_ref: int, hits: int, subs: int, dels: int, ins: int
) -> dict[str, float | int]:
    if num_ref == 0:
        raise ValueError(
            f"the references hold no {kind}s, so the error rate is undefined "
            "(expected at least one transcribed utterance)"
        )

    def pct(n: int) -> float:
        return 100.0 * n / num_ref

    return {
        "sub": pct(subs),
        "del": pct(dels),
        "ins": pct(ins),
        f"ref_{kind}s": num_ref,
        "hits": hits,
        "num_sub": subs,
        "num_del": dels,
        "num_ins": ins,
    }


def _error_rates(kind: str, references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """jiwer alignment at ``kind`` ("word" or "char") level -> rates in percent and counts."""
    _check_pairs(references, hypotheses)
    process = jiwer.process_words if kind == "word" else jiwer.process_characters
    out = process(list(references), list(hypotheses))
    num_ref = out.hits + out.substitutions + out.deletions
    rates = _rates(kind, num_ref, out.hits, out.substitutions, out.deletions, out.insertions)
    rates["wer" if kind == "word" else "cer"] = rates["sub"] + rates["del"] + rates["ins"]
    return rates


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """Corpus-level WER in percent, with sub/del/ins rates (percent of reference words) and counts.

    Words are whitespace-separated tokens; repeated and surrounding spaces are ignored.

    >>> r = word_error_rate(["A B C D E F G"], ["X B D F G H I J"])  # A->X; C, E lost; H I J added
    >>> r["num_sub"], r["num_del"], r["num_ins"], r["ref_words"]
    (1, 2, 3, 7)
    >>> [round(r[key], 2) for key in ("sub", "del", "ins", "wer")]
    [14.29, 28.57, 42.86, 85.71]

    Returns:
        ``{"wer", "sub", "del", "ins", "ref_words", "hits", "num_sub", "num_del", "num_ins"}``
    """
    return _error_rates("word", references, hypotheses)


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """Corpus-level CER in percent (spaces count as characters, as in jiwer), with counts.

    >>> round(char_error_rate(["AB CD"], ["AB CE"])["cer"], 2)
    20.0

    Returns:
        ``{"cer", "sub", "del", "ins", "ref_chars", "hits", "num_sub", "num_del", "num_ins"}``
    """
    return _error_rates("char", references, hypotheses)


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """WER and CER of a corpus in the reported names: wer, cer, sub, del, ins (word level).

    Returns:
        ``{"wer", "cer", "sub", "del", "ins", "ref_words", "ref_chars",
        "num_sub", "num_del", "num_ins"}``; ``sub``/``del``/``ins`` are word-level.
    """
    words = word_error_rate(references, hypotheses)
    chars = char_error_rate(references, hypotheses)
    return {
        "wer": words["wer"],
        "cer": chars["cer"],
        "sub": words["sub"],
        "del": words["del"],
        "ins": words["ins"],
        "ref_words": words["ref_words"],
        "ref_chars": chars["ref_chars"],
        "num_sub": words["num_sub"],
        "num_del": words["num_del"],
        "num_ins": words["num_ins"],
    }


def _error_slots(alignment, num_ref: int) -> list[int]:
    """One utterance's errors by place in the reference: slot ``2 i + 1`` is reference word
    ``i`` (1 if substituted or deleted), slot ``2 i`` the words inserted just before it (slot
    ``2 n``: after the last), so two hypotheses' errors compare place by place."""
    slots = [0] * (2 * num_ref + 1)
    for chunk in alignment:
        if chunk.type == "insert":
            slots[2 * chunk.ref_start_idx] += chunk.hyp_end_idx - chunk.hyp_start_idx
        elif chunk.type != "equal":  # substitute, delete: one error per reference word
            for i in range(chunk.ref_start_idx, chunk.ref_end_idx):
                slots[2 * i + 1] = 1
    return slots


def error_split(
    references: Sequence[str], teacher_hyps: Sequence[str], student_hyps: Sequence[str]
) -> dict:
    """The student's word errors split by whether its teacher makes them too, in percent of
    reference words: ``shared`` (the teacher errs at the same place: the same reference word
    substituted or deleted, even by another word; or words inserted at the same gap), ``own``
    (``shared + own`` is the student's WER) and ``fixed`` (the teacher's errors the student
    does not make; ``shared + fixed`` is the teacher's WER). Each hypothesis is aligned to the
    reference on its own (jiwer), so the split needs no alignment between the two models.

    >>> r = error_split(["A B C D"], ["A X C D E"], ["A Y C"])  # teacher: B->X, +E; student: B->Y, -D
    >>> r["num_shared"], r["num_own"], r["num_fixed"], r["ref_words"]
    (1, 1, 1, 4)
    >>> [r[key] for key in ("shared", "own", "fixed")]
    [25.0, 25.0, 25.0]

    Returns:
        ``{"shared", "own", "fixed", "num_shared", "num_own", "num_fixed", "ref_words"}``
    """
    _check_pairs(references, teacher_hyps)
    _check_pairs(references, student_hyps)
    refs = list(references)
    teacher = jiwer.process_words(refs, list(teacher_hyps))
    student = jiwer.process_words(refs, list(student_hyps))
    shared = own = fixed = 0
    for words, t_align, s_align in zip(
        teacher.references, teacher.alignments, student.alignments, strict=True
    ):
        t_slots, s_slots = _error_slots(t_align, len(words)), _error_slots(s_align, len(words))
        both = sum(min(t, s) for t, s in zip(t_slots, s_slots, strict=True))
        shared, own, fixed = shared + both, own + sum(s_slots) - both, fixed + sum(t_slots) - both
    ref_words = sum(len(words) for words in teacher.references)
    counts = {"num_shared": shared, "num_own": own, "num_fixed": fixed, "ref_words": ref_words}
    rates = {k: 100.0 * counts[f"num_{k}"] / ref_words for k in ("shared", "own", "fixed")}
    return rates | counts


def real_time_factor(processing_seconds: float, audio_seconds: float) -> float:
    """RTF = processing seconds / audio seconds; below 1 is faster than real time.

    >>> real_time_factor(0.5, 10.0)
    0.05
    """
    if audio_seconds <= 0:
        raise ValueError(f"audio_seconds must be > 0 to define an RTF, got {audio_seconds}")
    if processing_seconds < 0:
        raise ValueError(f"processing_seconds must be >= 0, got {processing_seconds}")
    return processing_seconds / audio_seconds


def per_audio_hour(seconds: float, audio_seconds: float) -> float:
    """A cost over ``audio_seconds`` of audio, scaled to one hour of audio (CPU-seconds, joules).

    >>> per_audio_hour(0.5, 10.0)
    180.0
    """
    if audio_seconds <= 0:
        raise ValueError(
            f"audio_seconds must be > 0 to scale a cost per audio hour, got {audio_seconds}"
        )
    return seconds * 3600.0 / audio_seconds


POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_DOMAIN = re.compile(r"intel-rapl:\d+$")  # intel-rapl:0, not its subdomains :0:0


class RaplCounters:
    """Intel RAPL energy counters of every CPU package (``<root>/intel-rapl:<N>/energy_uj``).

    Package domains only: their subdomains (``intel-rapl:0:0`` core, ...) are parts of them, and
    ``intel-rapl-mmio`` repeats a package. The counters measure the whole machine, not one
    process. ``read()`` gives µJ per domain, or None with ``note`` saying why: ``"n/a (no
    RAPL)"`` (no domain: VMs, containers, non-Intel), ``"n/a (RAPL not readable)"`` (since Linux
    5.10 ``energy_uj`` is root-only). :meth:`joules` turns two reads into joules, handling a
    counter that wrapped around ``max_energy_range_uj`` (once; it takes minutes at full power).

    >>> RaplCounters(root="/nonexistent").read() is None
    True
    """

    def __init__(self, root: str | Path | None = None) -> None:
        root = Path(POWERCAP_ROOT if root is None else root)
        self.domains = sorted(p for p in root.glob("intel-rapl:*") if _PACKAGE_DOMAIN.match(p.name))
        self.note = None if self.domains else "n/a (no RAPL)"
        self._ranges: dict[Path, int] | None = None

    def _value(self, path: Path) -> int | None:
        try:
            return int(path.read_text())
        except PermissionError:
            self.note = "n/a (RAPL not readable)"
        except (OSError, ValueError):
            self.note = "n/a (RAPL counter unreadable)"
        return None

    def read(self) -> dict[Path, int] | None:
        """µJ per package domain now, or None (``note`` says why)."""
        if self.note is not None:
            return None
        if self._ranges is None:
            ranges = {d: self._value(d / "max_energy_range_uj") for d in self.domains}
            if self.note is not None:
                return None
            self._ranges = ranges
        values = {d: self._value(d / "energy_uj") for d in self.domains}
        return None if self.note is not None else values

    def joules(self, start: dict[Path, int], end: dict[Path, int]) -> float:
        """Energy between two :meth:`read` results, summed over packages (wrap-around aware)."""
        total = 0
        for domain, before in start.items():
            delta = end[domain] - before
            if delta < 0:  # the counter passed max_energy_range_uj and restarted at 0
                delta += self._ranges[domain] + 1
            total += delta
        return total / 1e6


class Timer:
    """Stopwatch that accumulates over several ``with`` blocks: wall-clock ``seconds``
    (``perf_counter``), ``cpu_seconds`` of this process, all its threads (``process_time``), and
    with ``energy`` (:class:`RaplCounters`) ``joules`` of the CPU packages, or None and
    ``energy_note`` saying why ("n/a (no RAPL)").

    Time only the work being measured (model and search), not data loading, by entering the
    timer around the compute of each utterance or chunk. The counters are read outside the timed
    span.

    >>> t = Timer()
    >>> with t:
    ...     _ = sum(range(1000))
    >>> t.seconds > 0 and t.cpu_seconds >= 0 and t.calls == 1
    True
    """

    def __init__(self, energy: RaplCounters | None = None) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.calls = 0
        self.energy = energy
        self._joules = 0.0
        self._start: tuple[float, float] | None = None
        self._energy_start: dict | None = None

    @property
    def joules(self) -> float | None:
        """CPU package energy over the timed blocks, None where RAPL is absent or unreadable."""
        ok = self.energy is not None and self.energy.note is None
        return self._joules if ok else None

    @property
    def energy_note(self) -> str | None:
        return "n/a (not measured)" if self.energy is None else self.energy.note

    def __enter__(self) -> Timer:
        if self._start is not None:
            raise RuntimeError("Timer is already running: blocks cannot be nested")
        if self.energy is not None:
            self._energy_start = self.energy.read()
        self._start = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._start is not None
        wall, cpu = time.perf_counter(), time.process_time()
        self.seconds += wall - self._start[0]
        self.cpu_seconds += cpu - self._start[1]
        self.calls += 1
        self._start = None
        if self._energy_start is not None:
            end = self.energy.read()
            if end is not None:
                self._joules += self.energy.joules(self._energy_start, end)
            self._energy_start = None


def _occurrences(words: list[str], phrase: tuple[str, ...]) -> int:
    n = len(phrase)
    return sum(tuple(words[i : i + n]) == phrase for i in range(len(words) - n + 1))


def hotword_scores(
    references: Sequence[str], hypotheses: Sequence[str], hotwords: Sequence[str]
) -> dict:
    """How a decoding treats a hotword list: ``hotword_recall``, percent of the hotwords'
    occurrences in the references that the hypothesis of the same utterance holds too (an
    utterance with two and a hypothesis with one: one recognised); ``hotword_false``, hotword
    occurrences in hypotheses beyond their reference's count; ``wer_no_hotword``, the WER of the
    utterances whose reference holds no hotword (what biasing may cost elsewhere), null when
    there are none; ``hotword_refs`` and ``no_hotword_utts``, the counts behind them.

    >>> r = hotword_scores(["ANNA SAW BOB", "BOB RAN", "A DOG"], ["ANA SAW BOB", "BOB RAN",
    ...                    "A BOB"], ["ANNA", "BOB"])
    >>> r["hotword_recall"], r["hotword_false"], r["wer_no_hotword"], r["no_hotword_utts"]
    (66.67, 1, 50.0, 1)
    """
    _check_pairs(references, hypotheses)
    phrases = [tuple(h.split()) for h in hotwords if h.split()]
    occurring = recognised = false = 0
    plain_refs, plain_hyps = [], []
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref_words, hyp_words = ref.split(), hyp.split()
        in_ref = [_occurrences(ref_words, p) for p in phrases]
        in_hyp = [_occurrences(hyp_words, p) for p in phrases]
        occurring += sum(in_ref)
        recognised += sum(min(r, h) for r, h in zip(in_ref, in_hyp, strict=True))
        false += sum(max(h - r, 0) for r, h in zip(in_ref, in_hyp, strict=True))
        if not any(in_ref):
            plain_refs.append(ref)
            plain_hyps.append(hyp)
    plain = word_error_rate(plain_refs, plain_hyps)["wer"] if plain_refs else None
    return {
        "hotword_recall": round(100.0 * recognised / occurring, 2) if occurring else None,
        "hotword_false": false,
        "wer_no_hotword": None if plain is None else round(plain, 2),
        "hotword_refs": occurring,
        "no_hotword_utts": len(plain_refs),
    }
