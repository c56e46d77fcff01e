"""One result row: the schema of the rows of ``results.json`` and of the ``results.md`` table.

Every key a row may hold is declared once, in :class:`ResultRow`, with what it means. The
backends of ``asr-kd-evaluate`` build ``ResultRow`` s; :mod:`asr_kd.evaluation.report` checks a
``results.json`` and renders its table from the same declarations: :data:`REQUIRED_KEYS` (what
every row has, in old files too), :data:`NUMBER_KEYS` (numbers or null), :data:`COLUMNS` (the
table's columns, in order, each with its header and how its cell is written) and
:data:`DISTILL_COLUMNS` (the second table: what distillation did, the rows that have a teacher).

A row's JSON object holds its keys in declaration order; an ``optional`` key (``rtf_scope``,
``quantize``, ``rtf_without_fbank``, ``source``, ``frame_shift_ms``, the teacher comparison)
is written only by the rows that have it, so one runtime's figure is not a column of nulls in every other row.

Usage:
    row = ResultRow(model="student_kd", subset="test", mode="stream-320ms", wer=12.5, ...)
    row.to_dict()                            # a results.json row, keys in declaration order
    ResultRow.from_dict(row.to_dict()) == row
    [column.header for column in COLUMNS]    # "Model", "Mode", "WER %", ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

__all__ = [
    "COLUMNS",
    "DISTILL_COLUMNS",
    "HOTWORD_COLUMNS",
    "NUMBER_KEYS",
    "REQUIRED_KEYS",
    "Column",
    "ResultRow",
    "fmt",
    "row_label",
]


def fmt(value: float | None, spec: str) -> str:
    """A figure as a cell: ``format(value, spec)``, ``-`` for null or NaN; spec ``si``:
    1234567 -> '1.23 M' (a person compares orders of magnitude first)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if spec == "si":
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {unit}"
        return f"{value:.0f}"
    return format(value, spec)


def row_label(row: Mapping) -> str:
    """The model as rows and plots name it: ``student_kd``, ``student_kd (int8)``,
    ``student_kd (beam_lm)``: one line per label in the plots."""
    notes = [
        n for n in ("int8" if row.get("quantize") == "int8" else None, row.get("decoding")) if n
    ]
    return f"{row['model']} ({', '.join(notes)})" if notes else row["model"]


def _latency(row: Mapping) -> str:
    return "full utt." if row.get("latency_ms") is None else fmt(row["latency_ms"], ".0f")


def _energy(row: Mapping) -> str:
    """Joules per audio hour, or why there is none ("n/a (no RAPL)")."""
    if row.get("joules_per_audio_h") is not None:
        return fmt(row["joules_per_audio_h"], ".0f")
    return row.get("energy_note") or "-"


def _key(
    doc: str,
    *,
    required: bool = False,
    number: bool = False,
    optional: bool = False,
    column: tuple[int, str, str | Callable[[Mapping], str]] | None = None,
    json_key: str | None = None,
    table: str = "main",
):
    """A field of :class:`ResultRow`. ``required``: every results.json row has it (checked on
    load); ``number``: a number or null; ``optional``: written only when set (default None);
    ``column``: ``(position, header, cell)`` in results.md, ``cell`` a :func:`fmt` spec of the
    value or a function of the whole row;
    ``json_key``: the key when the name is a Python keyword (``del``); ``table``: ``main`` or
    ``distill`` (the second table, :data:`DISTILL_COLUMNS`)."""
    meta = {
        "doc": doc,
        "required": required,
        "number": number,
        "optional": optional,
        "column": column,
        "json_key": json_key,
        "table": table,
    }
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


def _shown(doc: str, position: int, header: str, cell, required: bool = False, json_key=None):
    """A figure of :class:`ResultRow` (a number or null) in results.md column ``position``
    under ``header``; ``cell``: a :func:`fmt` spec of the value, or a function of the row."""
    column = (position, header, cell)
    return _key(doc, required=required, number=True, column=column, json_key=json_key)


def _figure_of(table: str):
    """The field maker of an optional figure in results.md's table ``table``: ``distill`` (the
    teacher comparison, :data:`DISTILL_COLUMNS`) or ``hotwords`` (rows of a run with
    ``beam.hotwords``, :data:`HOTWORD_COLUMNS`), at column ``position`` (0 and 1 are the model
    and the mode)."""

    def figure(doc: str, position: int, header: str, cell):
        column = (position, header, cell)
        return _key(doc, number=True, optional=True, column=column, table=table)

    return figure


_distill, _hotword = _figure_of("distill"), _figure_of("hotwords")


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One (model, subset, mode, quantize) of an evaluation; field order is results.json's."""

    model: str = _key(
        "the checkpoint's name on the command line (``ckpt.<name>``)",
        required=True,
        column=(0, "Model", row_label),
    )
    subset: str = _key("the prepared subset decoded (an entry of ``subsets``)", required=True)
    mode: str = _key(
        "``full`` (the whole utterance at once) or ``stream-<N>ms`` (N ms chunks through "
        "``forward_chunk`` with caches); ``-sherpa-onnx`` (``-sherpa-onnx-hlg``) after either for "
        "that runtime's rows, "
        "``-<decoding>`` for a search other than greedy (``full-beam_lm``)",
        required=True,
        column=(1, "Mode", lambda row: row["mode"]),
    )
    wer: float = _shown(
        "word error rate, percent (jiwer; sub + del + ins)", 2, "WER %", ".2f", True
    )
    cer: float = _shown("character error rate, percent (spaces count)", 3, "CER %", ".2f", True)
    sub: float = _shown("word substitutions, percent of ref. words", 4, "Sub %", ".2f", True)
    del_: float = _shown("word deletions, percent of ref. words", 5, "Del %", ".2f", True, "del")
    ins: float = _shown("word insertions, percent of ref. words", 6, "Ins %", ".2f", True)
    rtf: float = _shown(
        "processing seconds / audio seconds of the timed pass (batch size 1 on ``threads`` "
        "threads, after warm-up; what it covers: ``rtf_scope``, else the meta's)",
        7, "RTF", ".4f", required=True,
    )  # fmt: skip
    runtime: str = _key(
        "what decoded and timed the row: ``torch``, ``onnx``, ``sherpa-onnx`` or "
        "``sherpa-onnx-hlg``"
    )
    rtf_scope: str | None = _key(
        "what ``rtf`` times when it differs from the meta's ``rtf_scope`` (sherpa-onnx: the "
        "fbank from audio too)",
        optional=True,
    )
    quantize: str | None = _key(
        "``none`` or ``int8`` (the ORT-quantised graphs); absent where the runtime has no int8 "
        "variant (sherpa-onnx)",
        optional=True,
    )
    decoding: str | None = _key(
        "the search when it is not greedy: ``beam`` or ``beam_lm`` (``asr_kd.inference.search``"
        "; the mode then ends in ``-<decoding>``), ``hlg`` (runtime sherpa-onnx-hlg: "
        "sherpa-onnx's FST decoder on an HLG graph); absent for greedy",
        optional=True,
    )
    cpu_s_per_audio_h: float | None = _shown(
        "CPU-seconds of the decoding process (all threads) per audio hour, in the RTF's spans",
        14, "CPU s / audio h", ".2f",
    )  # fmt: skip
    joules_per_audio_h: float | None = _shown(
        "CPU-package joules (RAPL, the whole machine) per hour of audio; null where the "
        "machine exposes no readable RAPL counters (never an estimate)",
        15, "J / audio h", _energy,
    )  # fmt: skip
    energy_note: str | None = _key("why ``joules_per_audio_h`` is null (``n/a (no RAPL)``)")
    num_utts: int = _key("utterances scored")
    audio_s: float = _key(
        "seconds of audio scored (fbank frames x 10 ms; a transformers model: samples / 16 kHz)"
    )
    ref_words: int = _key("words in the references")
    rtf_without_fbank: float | None = _key(
        "sherpa-onnx rows: ``rtf`` without sherpa-onnx's own fbank (the other rows' scope)",
        number=True,
        optional=True,
    )
    rtf_batch: float | None = _shown(
        "RTF of batched full-context decoding (torch, ``data.max_duration`` seconds of audio "
        "per batch, on ``threads_batch`` threads); null where there is no batched pass",
        8, "RTF batched", ".4f",
    )  # fmt: skip
    batch_size: int = _key("utterances per call of the timed pass")
    chunk_ms: float | None = _key("chunk size of a streaming row, ms; null for full context")
    left_chunks: int | None = _key(
        "attention left context of a streaming row, in chunks (-1: unlimited); null for full "
        "context"
    )
    threads: int = _key("threads of the timed pass (``rtf.threads``)")
    threads_batch: int | None = _key("torch threads of the batched pass; null without one")
    latency_ms: float | None = _shown(
        "algorithmic latency (chunk + right context), ms; null for full context (the whole "
        "utterance)",
        9, "Latency ms", _latency, required=True,
    )  # fmt: skip
    params: int = _shown("parameters of the model", 10, "Params", "si", True)
    macs_per_audio_s: float = _shown(
        "multiply-accumulates per second of audio, at the row's chunk size and left context",
        11, "MACs / audio s", "si", required=True,
    )  # fmt: skip
    model_mb: float = _shown("size of the model's fp32 parameters, MB", 12, "MB", ".2f", True)
    graph_mb: float | None = _shown(
        "size of the graph file that decoded the row, MB (int8 rows: the quantised graph); "
        "null for torch",
        13, "Graph MB", ".2f",
    )  # fmt: skip
    source: str | None = _key(
        "a transformers model: where it was read from (``hf:<dir|hub id>[@revision]``)",
        optional=True,
    )
    frame_shift_ms: float | None = _key(
        "a transformers model: its output frame shift, ms", optional=True
    )

    teacher: str | None = _key(
        "the checkpoint name of the teacher the next keys compare this row with (``teacher``)",
        optional=True,
    )
    agree_nonblank: float | None = _distill(
        "percent of the frames where the teacher's argmax is not blank on which this row's "
        "argmax is the same token",
        2, "Agree non-blank %", ".2f",
    )  # fmt: skip
    agree_blank: float | None = _distill(
        "percent of the teacher's blank frames on which this row's argmax is blank too",
        3, "Agree blank %", ".2f",
    )  # fmt: skip
    kl_teacher_student: float | None = _distill(
        "mean KL(teacher || this row's model) per valid frame, nats", 4, "KL nats/frame", ".4f"
    )
    err_shared: float | None = _distill(
        "word errors the teacher makes at the same place too (the same reference word "
        "substituted or deleted, or insertions at the same gap), percent of ref. words",
        5, "Errors shared %", ".2f",
    )  # fmt: skip
    err_own: float | None = _distill(
        "word errors the teacher does not make, percent of ref. words (shared + own = WER)",
        6, "Errors own %", ".2f",
    )  # fmt: skip
    err_fixed: float | None = _distill(
        "the teacher's word errors this row does not make, percent of ref. words "
        "(shared + fixed = the teacher's WER)",
        7, "Teacher errors fixed %", ".2f",
    )  # fmt: skip
    agreement_note: str | None = _key(
        "why the frame figures (``agree_*``, ``kl_teacher_student``) are null (another "
        "vocabulary or frame rate; an int8, sherpa-onnx or beam-search row)",
        optional=True,
        column=(8, "Note", lambda row: row.get("agreement_note") or ""),
        table="distill",
    )

    hotword_recall: float | None = _hotword(
        "percent of the hotwords' occurrences in the references (``beam.hotwords``) that the "
        "hypothesis of the same utterance holds (``asr_kd.metrics.hotword_scores``)",
        2, "Hotword recall %", ".2f",
    )  # fmt: skip
    hotword_false: int | None = _hotword(
        "hotword occurrences in hypotheses beyond their reference's count", 3, "False hotwords", "d"
    )
    wer_no_hotword: float | None = _hotword(
        "WER of the utterances whose reference holds no hotword", 4, "WER without hotwords", ".2f"
    )
    hotword_refs: int | None = _hotword(
        "hotword occurrences in the references", 5, "Hotwords in refs", "d"
    )
    no_hotword_utts: int | None = _hotword(
        "utterances whose reference holds no hotword", 6, "Utts without", "d"
    )

    def to_dict(self) -> dict:
        """The results.json object: every key in declaration order, optional ones when set."""
        return {
            _json_key(f): getattr(self, f.name)
            for f in fields(self)
            if not (f.metadata["optional"] and getattr(self, f.name) is None)
        }

    @classmethod
    def from_dict(cls, row: Mapping) -> ResultRow:
        """A results.json row back as a ``ResultRow`` (keys it lacks are null)."""
        return cls(**{f.name: row.get(_json_key(f)) for f in fields(cls)})


def _json_key(f) -> str:
    return f.metadata["json_key"] or f.name


@dataclass(frozen=True)
class Column:
    """A column of results.md: its ``header``, the row key it shows, and its ``cell`` text."""

    header: str
    key: str
    cell: Callable[[Mapping], str]


def _column(f) -> Column:
    _, header, how = f.metadata["column"]
    key = _json_key(f)
    if callable(how):
        return Column(header, key, how)
    return Column(header, key, lambda row: fmt(row.get(key), how))


_FIELDS = fields(ResultRow)
REQUIRED_KEYS = tuple(_json_key(f) for f in _FIELDS if f.metadata["required"])
NUMBER_KEYS = tuple(_json_key(f) for f in _FIELDS if f.metadata["number"])


def _columns(table: str) -> tuple[Column, ...]:
    shown = [f for f in _FIELDS if f.metadata["column"] and f.metadata["table"] == table]
    return tuple(_column(f) for f in sorted(shown, key=lambda f: f.metadata["column"][0]))


COLUMNS = _columns("main")
DISTILL_COLUMNS = COLUMNS[:2] + _columns("distill")  # Model, Mode, then the comparison
HOTWORD_COLUMNS = COLUMNS[:2] + _columns("hotwords")  # Model, Mode, then the hotword figures
