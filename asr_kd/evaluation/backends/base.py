"""What every backend of ``asr-kd-evaluate`` is and shares: the :class:`Backend` interface, the
:class:`Corpus` it reads, and :meth:`Backend.row`, the one place a decoding pass becomes a
:class:`~asr_kd.evaluation.rows.ResultRow` (and its hypotheses file).

A backend is one runtime (or, next, one decoding method): which models it decodes
(:meth:`Backend.runs`), what it refuses before any export (:meth:`Backend.check`), what it
exports and checks before any decoding (:meth:`Backend.prepare`, through :meth:`Backend.export`,
which a rerun takes back), its rows of one model on one subset (:meth:`Backend.rows`) and its
entries of the results' meta (:meth:`Backend.meta`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

from asr_kd.data.datamodule import AsrDataModule, load_cuts
from asr_kd.evaluation.exports import reused_export
from asr_kd.evaluation.resume import RowStore, file_identity, fingerprint
from asr_kd.evaluation.rows import ResultRow
from asr_kd.evaluation.settings import EvalSettings
from asr_kd.inference.hotwords import read_hotwords
from asr_kd.inference.timing import Decoded
from asr_kd.metrics import error_rates, hotword_scores
from asr_kd.models.profile import (
    algorithmic_latency_ms,
    count_params,
    macs_per_audio_second,
    model_size_mb,
)
from asr_kd.models.streaming import chunk_frames

__all__ = [
    "Backend",
    "Corpus",
    "hyps_path",
    "key_of",
    "model_figures",
    "read_hyps",
    "row_key",
    "scored_row",
]


class Corpus:
    """The prepared subsets of ``data_dir`` as every backend reads them: batches in a fixed
    order (``max_duration`` seconds of audio each), or the cuts themselves."""

    def __init__(self, data_dir: str, max_duration: float, num_workers: int) -> None:
        self.data_dir, self.max_duration = data_dir, max_duration
        self.dm = AsrDataModule(data_dir, num_workers=num_workers)

    def check(self, subsets) -> None:
        """``MissingFileError`` for a subset that was never prepared, before any decoding."""
        for subset in subsets:
            self.dm.layout.prepared_cuts(subset)

    def batches(self, subset: str, with_audio: bool = False) -> Iterator[dict]:
        """Batches of ``subset`` (``feats``, ``feat_lens``, ``cut_ids``, ``texts``; and
        ``audio``, ``audio_lens`` with ``with_audio``)."""
        audio = {"with_audio": True} if with_audio else {}
        yield from self.dm.dataloader(
            subset, shuffle=False, max_duration=self.max_duration, **audio
        )

    def cuts(self, subset: str) -> dict:
        """Cut id -> cut of ``subset`` (for what reads the audio itself)."""
        return {cut.id: cut for cut in load_cuts(self.data_dir, subset)}


def scored_row(
    model: str, subset: str, mode: str, scored: Decoded, timed: Decoded, **figures
) -> ResultRow:
    """A row whose error rates are those of ``scored``'s hypotheses and whose RTF and cost per
    audio hour are ``timed``'s (often the same pass); ``figures``: the row's other fields."""
    refs = [scored.refs[k] for k in sorted(scored.refs)]
    rates = error_rates(refs, [scored.hyps[k] for k in sorted(scored.refs)])
    return ResultRow(
        model=model,
        subset=subset,
        mode=mode,
        wer=rates["wer"],
        cer=rates["cer"],
        sub=rates["sub"],
        del_=rates["del"],
        ins=rates["ins"],
        rtf=timed.rtf,
        cpu_s_per_audio_h=timed.cpu_s_per_audio_h,
        joules_per_audio_h=timed.joules_per_audio_h,
        energy_note=timed.energy_note,
        num_utts=len(refs),
        audio_s=round(scored.audio_s, 3),
        ref_words=rates["ref_words"],
        **figures,
    )


def model_figures(model, chunk_size: int | None, left_chunks: int = -1) -> dict:
    """``latency_ms``, ``params``, ``macs_per_audio_s`` and ``model_mb`` of one of our models
    decoded with ``chunk_size`` encoder frames (None: full context)."""
    return {
        "latency_ms": algorithmic_latency_ms(model, chunk_size),
        "params": count_params(model),
        "macs_per_audio_s": macs_per_audio_second(model, chunk_size, left_chunks),
        "model_mb": model_size_mb(model),
    }


class Backend(ABC):
    """One runtime of ``asr-kd-evaluate`` and the rows it decodes (module docstring)."""

    name: ClassVar[str]  # its key in BACKENDS

    def __init__(self, settings: EvalSettings, corpus: Corpus) -> None:
        self.settings, self.corpus = settings, corpus
        self.store = RowStore(settings.out_dir)
        self.checks: dict[str, dict] = {}  # row key -> its batch-1 check (meta["check"])

    def fingerprint(self, name: str, subset: str, **parts) -> str:
        """The fingerprint of a row of model ``name`` on ``subset`` (:mod:`..resume`): the
        checkpoint's weights, the subset's cuts, this runtime, and the row's own ``parts``."""
        cuts = self.corpus.dm.layout.prepared_cuts(subset)
        return fingerprint(
            {
                "checkpoint": self.store.sha256(self.settings.checkpoints[name]),
                "cuts": self.store.sha256(cuts),
                "subset": subset,
                "runtime": self.name,
                "rtf": asdict(self.settings.rtf),
                **parts,
            }
        )

    def search_parts(self, decoding: str) -> dict:
        """What a row's ``decoding`` depends on: its name and, for a beam search, the beam
        settings with the files they name identified (:func:`..resume.file_identity`)."""
        if decoding == "greedy":
            return {"decoding": decoding}
        beam = asdict(self.settings.beam)
        for key in ("lm", "lexicon", "hotwords"):
            beam[key] = file_identity(beam[key])
        return {"decoding": decoding, "beam": beam}

    def finished(self, key: str, fp: str) -> ResultRow | None:
        """Row ``key`` as a former run finished it with fingerprint ``fp`` (its check back in
        :attr:`checks`), or None."""
        found = self.store.get(key, fp, self.settings.out_dir / "hyps" / f"{key}.tsv")
        if found is None:
            return None
        row, extra = found
        if "check" in extra:
            self.checks[key] = extra["check"]
        return row

    def keep(self, fp: str, row: ResultRow) -> ResultRow:
        """Write finished ``row`` (and its check) into the store under fingerprint ``fp``."""
        key = row_key(row)
        extra = {"check": self.checks[key]} if key in self.checks else {}
        self.store.put(key, fp, row, extra)
        return row

    def export(
        self, name: str, loaded, out_dir: Path, fmt: str, chunk_sizes, left_chunks, **options
    ):
        """:func:`~asr_kd.export.onnx.export_and_check` of model ``name`` into ``out_dir``, or
        the graphs an earlier run exported there from the same checkpoint content, settings and
        export code (:mod:`~asr_kd.evaluation.exports`)."""
        sha = self.store.sha256(self.settings.checkpoints[name])
        return reused_export(
            loaded, out_dir, fmt, chunk_sizes, left_chunks, checkpoint_sha=sha, **options
        )

    @classmethod
    def reads_source(cls, source: str) -> bool:
        """Whether ``source`` names a model this backend reads from elsewhere than a
        checkpoint file (a hub id, a model directory)."""
        return False

    @abstractmethod
    def runs(self, loaded) -> bool:
        """Whether this backend decodes ``loaded`` (what ``load_model`` returned)."""

    def check(self, name: str, loaded) -> None:
        """Refuse (``ConfigError``) what it cannot run, before any model is exported."""
        return None  # a backend that runs whatever it accepts has nothing to refuse

    def prepare(self, name: str, loaded) -> None:
        """Export, and check against torch, what its rows decode, before any decoding."""
        return None  # a backend that decodes the checkpoint itself exports nothing

    @abstractmethod
    def rows(self, name: str, loaded, subset: str) -> list[ResultRow]:
        """Its rows of model ``name`` on ``subset``, in the order of the report."""

    def meta(self) -> dict:
        """Its entries of ``results["meta"]`` (versions, export differences)."""
        return {}

    def row(self, scored: Decoded, timed: Decoded, **fields) -> ResultRow:
        """:func:`scored_row`, and ``hyps/<model>.<subset>.<mode>[-int8].tsv`` of ``scored``;
        with ``beam.hotwords``, the row's hotword figures (every row: greedy and unbiased
        rows are the baseline)."""
        hotwords = self.settings.beam.hotwords
        if hotwords is not None:
            words = [word for word, _ in read_hotwords(hotwords, default_boost=0.0)]
            keys = sorted(scored.refs)
            refs, hyps = [scored.refs[k] for k in keys], [scored.hyps[k] for k in keys]
            fields = {**hotword_scores(refs, hyps, words), **fields}
        row = scored_row(scored=scored, timed=timed, **fields)
        _write_hyps(hyps_path(self.settings.out_dir, row), scored)
        return row

    def chunk_size(self, name: str, loaded, chunk_ms: float) -> int:
        """Encoder frames of a ``chunk_sizes_ms`` entry (``ValueError`` unless it fits)."""
        return chunk_frames(loaded.model, chunk_ms, source=f"model {name} ({loaded.path})")


def row_key(row: ResultRow) -> str:
    """``<model>.<subset>.<mode>[-int8]``: a row's name in ``hyps/`` and ``rows/``."""
    return key_of(row.model, row.subset, row.mode, row.quantize)


def key_of(model: str, subset: str, mode: str, quantize: str | None) -> str:
    """:func:`row_key` of a row not decoded yet."""
    tag = "-int8" if quantize == "int8" else ""
    return f"{model}.{subset}.{mode}{tag}"


def hyps_path(out_dir: Path, row: ResultRow) -> Path:
    """``<out_dir>/hyps/<model>.<subset>.<mode>[-int8].tsv``: the hypotheses of ``row``."""
    return Path(out_dir) / "hyps" / f"{row_key(row)}.tsv"


def read_hyps(path: Path) -> dict[str, tuple[str, str]]:
    """Cut id -> (reference, hypothesis) of a file :meth:`Backend.row` wrote."""
    lines = Path(path).read_text().splitlines()[1:]  # the header
    return {cut_id: (ref, hyp) for cut_id, ref, hyp in (line.split("\t") for line in lines)}


def _write_hyps(path: Path, decoded: Decoded) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k}\t{decoded.refs[k]}\t{decoded.hyps[k]}" for k in sorted(decoded.refs)]
    tmp = path.with_suffix(".tsv.tmp")  # whole or absent after a kill (resume reads it)
    tmp.write_text("cut_id\treference\thypothesis\n" + "\n".join(lines) + "\n")
    os.replace(tmp, path)
