"""asr-kd-prepare: a LibriSpeech-layout corpus -> lhotse manifests, fbank features, tokenizer, CMVN.

Writes the data directory described in docs/internals.md (every path from
:class:`asr_kd.data.layout.DataDir`):

    DATA/recordings_<subset>.jsonl.gz  supervisions_<subset>.jsonl.gz  cuts_<subset>.jsonl.gz
    DATA/feats/<subset>/               80-dim fbank (lhotse LilcomChunkyWriter)
    DATA/lang/tokenizer.json           (+ lang/bpe.model for BPE), trained on the train subsets
    DATA/cmvn.json                     {"mean": [80], "std": [80], "num_frames": n} over train
    DATA/prepare_report.json           counts per subset, skips per reason with the first files
    DATA/prepared_<subset>.json        the subset is finished (written last, atomically)

``speed_perturb=[0.9,1.1]`` adds to each train subset's cuts one copy of every cut per factor
(ids ``<id>_sp0.9``, ``<id>_sp1.1``), with its own fbank in ``feats/<subset>/``, so that soft
targets can be dumped for them like for any cut (:mod:`asr_kd.data.perturb`); CMVN, the
tokenizer and the report's utterances and hours come from the unperturbed cuts only. Default
off: a prepare without it writes what it always wrote.

Audio headers are probed and fbank extracted in ``num_jobs`` worker processes, with progress bars
(fbank in hours of audio); CMVN comes from per-cut float64 sums added in cut-id order, so
``num_jobs`` does not change it (:mod:`asr_kd.data.extraction`). A rerun (after a kill, or with
more subsets) keeps every subset whose marker matches its utterances and redoes the others from
scratch; the tokenizer, CMVN and report are written again from all subsets.

Every utterance is validated; a bad one is dropped and counted under its reason (the first
few file names kept as examples): ``unreadable_audio``, ``zero_length_audio``, ``not_mono``,
``missing_audio``, ``untranscribed_audio``, ``empty_transcript``, ``outside_alphabet``,
``unspellable_by_teacher`` (``tokenizer=from_teacher``: a character the teacher's vocabulary
lacks), ``too_short_for_ctc`` (fewer output frames at ``ctc_frame_shift_ms`` than tokens + repeats).
Audio at another sample rate is resampled to 16 kHz and reported under ``resampled`` (kept).

Usage:
    asr-kd-prepare corpus_dir=DIR/LibriSpeech subsets=[train,dev,test] out_dir=DATA tokenizer=char
    asr-kd-prepare corpus_dir=/corpora/LibriSpeech out_dir=data/ls \\
        subsets=[train-clean-100,dev-clean,test-clean,test-other] tokenizer=bpe tokenizer.vocab_size=500
    asr-kd-prepare ... subsets=[train,extra,dev] untranscribed_subsets=[extra]   # KD-only audio
    asr-kd-prepare ... tokenizer=from_teacher tokenizer.teacher=hf:exp/hf_teacher   # its vocab
    asr-kd-prepare ... num_jobs=$(nproc)   # one worker process per core
    asr-kd-prepare ... speed_perturb=[0.9,1.1]   # + speed-perturbed copies of the train cuts
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from asr_kd.checkpoint import atomic_write
from asr_kd.config import save_config
from asr_kd.data.extraction import (
    AudioInfo,
    CmvnSums,
    WorkerPool,
    extract_features,
    probe_all,
    write_jsonl,
)
from asr_kd.data.features import SAMPLE_RATE
from asr_kd.data.layout import DataDir
from asr_kd.data.librispeech import LibriUtterance, scan_subset, subset_table
from asr_kd.data.perturb import MARKER_KEY, speed_copies, speed_factors
from asr_kd.data.teacher_vocab import teacher_vocab
from asr_kd.data.tokenizer import Tokenizer, normalize_text, outside_alphabet
from asr_kd.errors import BadFileError, ConfigError

__all__ = ["KEPT_REASONS", "ctc_frames_needed", "prepare", "prepare_skips", "run"]

NUM_EXAMPLES = 5  # file names kept per skip reason in the report
KEPT_REASONS = ("resampled",)  # reported, but the cut is kept (not counted as skipped)


class _Report:
    """Counts and first examples per (subset, reason)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.examples: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))

    def add(self, subset: str, reason: str, example: str) -> None:
        self.counts[subset][reason] += 1
        if len(self.examples[subset][reason]) < NUM_EXAMPLES:
            self.examples[subset][reason].append(example)

    def for_subset(self, subset: str) -> dict:
        return {
            reason: {"count": n, "examples": self.examples[subset][reason]}
            for reason, n in sorted(self.counts[subset].items())
        }


def ctc_frames_needed(ids: list[int]) -> int:
    """Output frames CTC needs for ``ids``: one per token plus a blank between each repeat.

    >>> ctc_frames_needed([5, 5, 6])
    4
    """
    repeats = sum(1 for a, b in zip(ids, ids[1:], strict=False) if a == b)
    return len(ids) + repeats


@dataclass(frozen=True)
class _Item:
    utt: LibriUtterance
    text: str  # normalised
    info: AudioInfo


def _relative(path: Path, corpus_dir: Path) -> str:
    try:
        return str(path.relative_to(corpus_dir))
    except ValueError:
        return str(path)


def _validate_subset(
    corpus_dir: Path,
    subset: str,
    transcribed: bool,
    pool: WorkerPool,
    report: _Report,
    teacher: Tokenizer | None = None,
) -> list[_Item]:
    """Scan one subset; drop (and report) what fails the text or the audio header checks
    (``teacher``: the tokenizer from a teacher's vocabulary, which must spell every transcript).
    Audio that does not decode is caught later, by the fbank extraction (:func:`_extract`)."""
    scan = scan_subset(corpus_dir, subset, transcribed=transcribed)
    for reason, names in scan.problems.items():
        for name in names:
            report.add(subset, reason, name)
    candidates = []
    for utt in scan.utterances:
        text = normalize_text(utt.text)
        name = _relative(utt.audio_path, corpus_dir)
        if transcribed and not text:
            report.add(subset, "empty_transcript", name)
        elif transcribed and teacher is not None and teacher.cannot_spell(text):
            bad = "".join(teacher.cannot_spell(text))
            report.add(subset, "unspellable_by_teacher", f"{name} {bad!r}")
        elif transcribed and teacher is None and outside_alphabet(text):
            report.add(subset, "outside_alphabet", f"{name} {''.join(outside_alphabet(text))!r}")
        else:
            candidates.append((utt, text))
    paths = [str(utt.audio_path) for utt, _ in candidates]
    infos = probe_all(pool, paths, desc=f"probe {subset}")
    items = []
    for (utt, text), info in zip(candidates, infos, strict=True):
        name = _relative(utt.audio_path, corpus_dir)
        if info.error:
            report.add(subset, "unreadable_audio", f"{name}: {info.error}")
        elif info.num_samples == 0:
            report.add(subset, "zero_length_audio", name)
        elif info.channels != 1:
            report.add(subset, "not_mono", f"{name} ({info.channels} channels)")
        else:
            if info.sample_rate != SAMPLE_RATE:
                report.add(subset, "resampled", f"{name} ({info.sample_rate} Hz)")
            items.append(_Item(utt, text, info))
    return items


def _ctc_shortfall(seconds: float, text: str, tokenizer: Tokenizer, frame_shift_ms: float) -> str:
    """ "" when ``seconds`` of audio give CTC enough output frames for ``text``, else why not."""
    frames = int(seconds * 1000 // frame_shift_ms)
    needed = ctc_frames_needed(tokenizer.encode(text)) if text else 0
    return f"{frames} frames < {needed} needed" if frames < needed else ""


def _drop_too_short(
    subset: str, items: list[_Item], tokenizer: Tokenizer, frame_shift_ms: float, report: _Report
) -> list[_Item]:
    """Drop utterances whose audio gives fewer CTC output frames than their text needs."""
    kept = []
    for item in items:
        seconds = item.info.num_samples / item.info.sample_rate
        shortfall = _ctc_shortfall(seconds, item.text, tokenizer, frame_shift_ms)
        if shortfall:
            report.add(subset, "too_short_for_ctc", f"{item.utt.utt_id} ({shortfall})")
        else:
            kept.append(item)
    return kept


def _speed_factors_of(plan: _Plan, subset: str) -> tuple[float, ...]:
    """The speed-perturbation factors of ``subset``: the plan's for a training subset, else ()."""
    return plan.speed_perturb if subset in plan.train_subsets else ()


def _with_speed_copies(plan: _Plan, subset: str, cuts, tokenizer: Tokenizer, report) -> list:
    """``cuts`` and their speed-perturbed copies (:mod:`asr_kd.data.perturb`) when ``subset`` is
    a training subset and ``plan.speed_perturb`` is set, sorted by id. A copy made too short for
    CTC (a factor above 1 shortens it) is dropped and reported as ``too_short_for_ctc``."""
    factors = _speed_factors_of(plan, subset)
    if not factors:
        return list(cuts)
    kept = list(cuts)
    for copy in speed_copies(cuts, factors):
        text = copy.supervisions[0].text
        shortfall = _ctc_shortfall(copy.duration, text, tokenizer, plan.ctc_frame_shift_ms)
        if shortfall:
            report.add(subset, "too_short_for_ctc", f"{copy.id} ({shortfall})")
        else:
            kept.append(copy)
    return sorted(kept, key=lambda c: c.id)


def _cuts(items: list[_Item]) -> list:
    """One lhotse mono cut per utterance (id = utterance id), with its recording and its
    supervision; prepare writes the recordings and supervisions manifests from these."""
    from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment

    cuts = []
    for item in items:
        info, utt = item.info, item.utt
        recording = Recording(
            id=utt.utt_id,
            sources=[AudioSource("file", [0], str(utt.audio_path.resolve()))],
            sampling_rate=info.sample_rate,
            num_samples=info.num_samples,
            duration=info.num_samples / info.sample_rate,
        )
        if info.sample_rate != SAMPLE_RATE:
            recording = recording.resample(SAMPLE_RATE)
        supervision = SupervisionSegment(
            id=utt.utt_id,
            recording_id=utt.utt_id,
            start=0.0,
            duration=recording.duration,
            channel=0,
            text=item.text,
            speaker=utt.speaker,
            language="English",
            custom={"chapter": utt.chapter},
        )
        cut = MonoCut(utt.utt_id, 0.0, recording.duration, 0, recording=recording)
        cut.supervisions = [supervision]
        cuts.append(cut)
    return cuts


def _subset_key(items: list[_Item], speed_factors: tuple[float, ...] = ()) -> str:
    """A digest of what a subset's features and cuts are made from: a finished subset whose key
    still matches is kept on a rerun, one whose corpus, transcripts or speed-perturbation
    factors changed is redone. Without factors, the key of a prepare that had none."""
    lines = [
        f"{i.utt.utt_id}\t{i.utt.audio_path}\t{i.info.num_samples}\t{i.info.sample_rate}\t{i.text}"
        for i in items
    ]
    if speed_factors:
        lines.append(f"{MARKER_KEY}\t{list(speed_factors)}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _finished(data: DataDir, subset: str, key: str) -> dict | None:
    """The marker of ``subset`` when it was finished from the same utterances, else None."""
    try:
        done = json.loads(data.subset_done(subset).read_text())
    except (OSError, ValueError):
        return None
    if done.get("key") != key or not (data.cuts(subset).is_file() and data.feats(subset).is_dir()):
        return None
    return done


def _write_atomic(path: Path, text: str) -> None:
    """Written whole or not at all (a killed prepare leaves no half marker)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _extract(
    plan: _Plan, data: DataDir, subset: str, items: list[_Item], tokenizer, pool, report
) -> dict:
    """Manifests and fbank of one subset (with its speed-perturbed copies, CMVN sums over the
    originals only); the subset's marker (written last) is returned.

    Features of an unfinished earlier run are removed first. Audio whose body fails to decode
    is dropped as ``unreadable_audio``, as a bad header is (once per utterance, its copies
    failing with it)."""
    marker = data.subset_done(subset)
    marker.unlink(missing_ok=True)
    storage = DataDir(data.root.resolve()).feats(subset)
    if storage.exists():
        shutil.rmtree(storage)
    cuts = _cuts(items)
    names = {i.utt.utt_id: _relative(i.utt.audio_path, plan.corpus_dir) for i in items}
    every = _with_speed_copies(plan, subset, cuts, tokenizer, report)
    result = extract_features(
        pool, every, storage, desc=f"fbank {subset}", cmvn_ids=names, manifest_ids=names
    )
    failures = [
        ["unreadable_audio", f"{names[k]}: {v}" if k in names else f"{k}: {v}"]
        for k, v in sorted(result.failures.items())
        if k.rpartition("_sp")[0] not in result.failures  # a copy fails with its original
    ]
    for reason, example in failures:
        report.add(subset, reason, example)
    originals = [c for c in result.cuts if c.id in names]
    if not originals:
        raise BadFileError(
            f"{plan.corpus_dir / subset}: no usable utterance left: {report.for_subset(subset)}"
        )
    write_jsonl(data.recordings(subset), (c.manifest_lines[0] for c in originals))
    write_jsonl(data.supervisions(subset), (s for c in originals for s in c.manifest_lines[1:]))
    write_jsonl(data.cuts(subset), (c.line for c in result.cuts))
    factors = _speed_factors_of(plan, subset)
    done = {
        "key": _subset_key(items, factors),
        "utterances": len(originals),
        "speakers": len({c.speaker for c in originals}),
        "seconds": sum(c.seconds for c in originals),
        "failures": failures,
        "cmvn_sums": result.sums.to_json(),
    }
    if factors:
        copies = [c for c in result.cuts if c.id not in names]
        done[MARKER_KEY] = list(factors)
        done["speed_copies"] = {"cuts": len(copies), "seconds": sum(c.seconds for c in copies)}
    _write_atomic(marker, json.dumps(done) + "\n")
    return done


def _default_train_subsets(subsets: list[str], untranscribed: list[str]) -> list[str]:
    """Every transcribed subset whose name contains "train" (train-clean-100 + train-clean-360 ...)."""
    found = [s for s in subsets if "train" in s and s not in untranscribed]
    if not found:
        raise ConfigError(
            f"no subset name containing 'train' in {subsets}: set train_subsets=[...]"
        )
    return found


def _train_tokenizer(kind: str, bpe_vocab_size: int, texts: list[str]) -> Tokenizer:
    if kind == "char":
        return Tokenizer.char()
    if kind == "bpe":
        tokenizer = Tokenizer.train_bpe(texts, vocab_size=bpe_vocab_size)
        if tokenizer.vocab_size < bpe_vocab_size:  # sentencepiece stops when merges run out
            warnings.warn(
                f"tokenizer.vocab_size={bpe_vocab_size} asked, but the training text "
                f"({len(texts)} transcripts) fills only {tokenizer.vocab_size} ids; the models "
                "use that size. More training text, or a smaller vocab_size, removes this.",
                stacklevel=2,
            )
        return tokenizer
    raise ConfigError(f"tokenizer kind {kind!r}; expected char, bpe or from_teacher")


@dataclass(frozen=True)
class _Plan:
    """What :func:`prepare` was asked to do, checked before any work starts."""

    corpus_dir: Path
    subsets: list[str]
    train_subsets: list[str]  # tokenizer and CMVN come from these
    untranscribed_subsets: list[str]  # cuts with text "" (audio for KD only)
    tokenizer_kind: str
    bpe_vocab_size: int
    teacher: Tokenizer | None  # tokenizer=from_teacher: built from the teacher's vocabulary
    ctc_frame_shift_ms: float
    num_jobs: int
    speed_perturb: tuple[float, ...] = ()  # copies of the train subsets' cuts at these speeds


def _prepare_subsets(plan: _Plan, data: DataDir, pool: WorkerPool, report) -> tuple:
    """Validate every subset, train the tokenizer, then manifests and features per subset; a
    subset finished by an earlier run from the same utterances is kept as it is.

    Returns ``(tokenizer, {subset: its marker})``."""
    items = {
        s: _validate_subset(
            plan.corpus_dir, s, s not in plan.untranscribed_subsets, pool, report, plan.teacher
        )
        for s in plan.subsets
    }
    train_texts = [i.text for s in plan.train_subsets for i in items[s] if i.text]
    tokenizer = plan.teacher or _train_tokenizer(
        plan.tokenizer_kind, plan.bpe_vocab_size, train_texts
    )
    tokenizer.save(data.lang)
    done = {}
    for subset in plan.subsets:
        kept = _drop_too_short(subset, items[subset], tokenizer, plan.ctc_frame_shift_ms, report)
        if not kept:
            raise BadFileError(
                f"{plan.corpus_dir / subset}: no usable utterance left: {report.for_subset(subset)}"
            )
        key = _subset_key(kept, _speed_factors_of(plan, subset))
        done[subset] = _finished(data, subset, key)
        if done[subset] is None:
            done[subset] = _extract(plan, data, subset, kept, tokenizer, pool, report)
        else:
            print(f"asr-kd-prepare: {subset} was finished ({data.subset_done(subset)}): kept")
            for reason, example in done[subset]["failures"]:
                report.add(subset, reason, example)
    return tokenizer, done


def prepare(
    corpus_dir: str | Path,
    subsets: list[str],
    out_dir: str | Path,
    tokenizer_kind: str = "char",
    bpe_vocab_size: int = 500,
    train_subsets: list[str] | None = None,
    untranscribed_subsets: list[str] = (),
    ctc_frame_shift_ms: float = 40.0,
    num_jobs: int = 2,
    teacher: str | None = None,
    speed_perturb: Sequence[float] = (),
) -> dict:
    """Write the data directory ``out_dir`` from ``corpus_dir``; returns the report (also saved).

    ``tokenizer_kind="from_teacher"`` takes the tokenizer from ``teacher`` (``hf:...``).
    ``speed_perturb`` (e.g. ``[0.9, 1.1]``) adds speed-perturbed copies of the train subsets'
    cuts, with their own features (:mod:`asr_kd.data.perturb`); CMVN leaves them out."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    subsets = list(subsets)
    train_subsets = (
        list(train_subsets)
        if train_subsets
        else _default_train_subsets(subsets, list(untranscribed_subsets))
    )
    if int(num_jobs) < 1:
        raise ConfigError(f"num_jobs={num_jobs}: expected 1 or more worker processes")
    unknown = [s for s in [*train_subsets, *untranscribed_subsets] if s not in subsets]
    if unknown:
        raise ConfigError(f"train/untranscribed subsets {unknown} are not among subsets={subsets}")
    plan = _Plan(
        corpus_dir, subsets, train_subsets, list(untranscribed_subsets), tokenizer_kind,
        int(bpe_vocab_size), _teacher_tokenizer(tokenizer_kind, teacher),
        float(ctc_frame_shift_ms), int(num_jobs), speed_factors(speed_perturb),
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    data = DataDir(out_dir)
    report = _Report()
    with WorkerPool(plan.num_jobs) as pool:
        tokenizer, done = _prepare_subsets(plan, data, pool, report)
    sums = CmvnSums()
    for subset in train_subsets:  # in a fixed order: the same statistics on every rerun
        part = CmvnSums.from_json(done[subset]["cmvn_sums"])
        sums.add(part.total, part.total_sq, part.num_frames)
    data.cmvn.write_text(json.dumps(sums.stats()) + "\n")
    result = _summary(corpus_dir, out_dir, done, report, tokenizer, train_subsets)
    result["untranscribed_subsets"] = list(untranscribed_subsets)
    data.report.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _teacher_tokenizer(kind: str, teacher: str | None) -> Tokenizer | None:
    """``from_teacher``: the tokenizer of ``teacher``'s vocabulary (read now, before any work)."""
    if kind != "from_teacher":
        return None
    if not teacher:
        raise ConfigError(
            "tokenizer=from_teacher needs tokenizer.teacher=hf:<save_pretrained dir or hub id>"
        )
    return teacher_vocab(str(teacher)).tokenizer


def prepare_skips(data_dir: str | Path, subsets: Iterable[str]) -> dict | None:
    """What :func:`prepare` dropped from each of ``subsets``, from its report in ``data_dir``:
    ``{"report": path, "subsets": {subset: {"skipped": n, "reasons": {reason: count}}}}``.

    None (and nothing reported) when the data dir has no report; a subset the report does not
    list is left out; reasons of kept cuts (:data:`KEPT_REASONS`) are left out. An unreadable
    report is a warning, not an error: it only annotates results (asr-kd-evaluate)."""
    path = DataDir(data_dir).report
    if not path.is_file():
        return None
    try:
        prepared = json.loads(path.read_text())["subsets"]
        dropped = {
            subset: {
                "skipped": int(prepared[subset]["skipped"]),
                "reasons": {
                    reason: int(entry["count"])
                    for reason, entry in prepared[subset]["reasons"].items()
                    if reason not in KEPT_REASONS
                },
            }
            for subset in subsets
            if subset in prepared
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        warnings.warn(
            f"{path} is not an asr-kd-prepare report ({type(err).__name__}: {err}); the results "
            "will not say how many cuts preparation dropped",
            stacklevel=2,
        )
        return None
    return {"report": str(path), "subsets": dropped}


def _summary(corpus_dir, out_dir, done: dict, report: _Report, tokenizer, train_subsets) -> dict:
    subsets = {}
    for subset, marker in done.items():
        reasons = report.for_subset(subset)
        subsets[subset] = {
            "utterances": marker["utterances"],
            "speakers": marker["speakers"],
            "hours": round(marker["seconds"] / 3600, 4),
            "skipped": sum(r["count"] for k, r in reasons.items() if k not in KEPT_REASONS),
            "reasons": reasons,
        }
        if MARKER_KEY in marker:  # hours and skips above count the unperturbed utterances
            copies = marker["speed_copies"]
            subsets[subset]["speed_copies"] = {
                "factors": marker[MARKER_KEY],
                "cuts": copies["cuts"],
                "hours": round(copies["seconds"] / 3600, 4),
            }
    return {
        "corpus_dir": str(corpus_dir),
        "out_dir": str(out_dir),
        "train_subsets": train_subsets,
        "tokenizer": {
            "kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "fingerprint": tokenizer.fingerprint,
            **({"from_teacher": True} if tokenizer.teacher is not None else {}),
        },
        "subsets": subsets,
    }


def _print_summary(result: dict) -> None:
    print(f"\nasr-kd-prepare: {result['corpus_dir']} -> {result['out_dir']}")
    columns = [("utterances", "d"), ("speakers", "d"), ("hours", ".3f"), ("skipped", "d")]
    print(subset_table(result["subsets"], columns))
    for name, row in result["subsets"].items():
        for reason, entry in row["reasons"].items():
            kept = " (kept)" if reason in KEPT_REASONS else ""
            examples = ", ".join(entry["examples"][:3])
            print(f"  {name}: {reason}{kept} x{entry['count']}: {examples}")
        if "speed_copies" in row:
            copies = row["speed_copies"]
            print(
                f"  {name}: + {copies['cuts']} speed-perturbed copies ({copies['hours']:.3f} h) "
                f"at speeds {copies['factors']}, with their own features; CMVN without them"
            )
    tok = result["tokenizer"]
    print(
        f"tokenizer: {tok['kind']}, {tok['vocab_size']} ids, fingerprint {tok['fingerprint']}; "
        f"CMVN and tokenizer from {result['train_subsets']}"
    )


def run(cfg: DictConfig) -> dict:
    """``asr-kd-prepare`` on a composed ``conf/prepare.yaml``; returns the report."""
    out_dir = Path(cfg.out_dir)
    save_config(cfg, out_dir)
    result = prepare(
        corpus_dir=cfg.corpus_dir,
        subsets=list(cfg.subsets),
        out_dir=out_dir,
        tokenizer_kind=cfg.tokenizer.kind,
        bpe_vocab_size=int(cfg.tokenizer.get("vocab_size", 500)),
        train_subsets=list(cfg.train_subsets) if cfg.train_subsets else None,
        untranscribed_subsets=list(cfg.untranscribed_subsets),
        ctc_frame_shift_ms=float(cfg.ctc_frame_shift_ms),
        num_jobs=int(cfg.num_jobs),
        teacher=cfg.tokenizer.get("teacher"),
        speed_perturb=list(cfg.get("speed_perturb") or ()),
    )
    _print_summary(result)
    return result
