"""Our checkpoints decoded on precomputed fbank: runtime ``torch`` (eager) and ``onnx`` (the
graphs :func:`~asr_kd.export.onnx.export_and_check` writes into ``<out_dir>/onnx/<name>/``).

Rows of one model on one subset: ``full``, then one ``stream-<N>ms`` per chunk size (streaming
models), each once per ``quantize`` entry and once per ``decoding`` entry (greedy rows as
named, others with ``-<decoding>`` after the mode: ``full-beam_lm``, their ``decoding`` key
set). A search is built once per tokenizer and decoding (a beam search loads its LM once).

Where each figure comes from (fp32 rows):

- WER/CER: one batched torch pass per context (full, or a chunk size) on ``device``
  (:func:`~asr_kd.inference.timing.decode_batched`): a streaming row's log-probs are the
  chunk-masked full forward at its chunk size and left context, which equals ``forward_chunk``
  (the model's contract, held to 1e-4 by the tests); every decoding of that context searches
  the same log-probs (greedy vectorised, a beam search per utterance). ``rtf_batch`` is its
  time.
- RTF: the row's runtime at batch size 1 on ``rtf.threads`` (the step graph or
  ``forward_chunk`` for a streaming row), over the first ``rtf.max_utts`` utterances.
- The check: the first ``check_utts`` utterances of that batch-1 pass are compared with the
  batched transcripts; the count that differ is ``meta["check"][<row key>]``, warned about
  when not zero.

A subset no larger than the RTF's sample is decoded whole at batch 1 anyway: its fp32 rows take
WER and RTF from that one pass and no batched pass runs (``meta["check"]`` says so: nothing to
compare), unless ``check_utts`` is null (compare every transcript: the batched pass runs).
int8 rows always take WER and RTF from one batch-1 pass over every utterance (int8 graphs run in
ONNX Runtime only). :meth:`FbankBackend._passes` decides this once per row. A finished row is
kept in ``<out_dir>/rows/`` (:mod:`~asr_kd.evaluation.resume`) and not decoded again by a rerun
with the same settings; a rerun takes back the exports too (:mod:`~asr_kd.evaluation.exports`).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch

from asr_kd.evaluation.backends.base import Backend, key_of, model_figures
from asr_kd.evaluation.rows import ResultRow
from asr_kd.export.quantize import INT8_DIR
from asr_kd.inference.factory import Decoder, graph_path, make_decoder
from asr_kd.inference.search import CtcSearch, make_search, mode_suffix, row_decoding
from asr_kd.inference.timing import Decoded, decode_batched, decode_one_at_a_time, utterances
from asr_kd.models.loading import LoadedModel

__all__ = [
    "FbankBackend",
    "OnnxBackend",
    "TorchBackend",
    "transcripts_differ",
    "whole_subset_check",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Context:
    """The attention context of a set of rows: full (``chunk_ms`` None) or one chunk size."""

    chunk_ms: float | None
    chunk_size: int | None
    left_chunks: int | None

    def mode(self, decoding: str) -> str:
        base = "full" if self.chunk_ms is None else f"stream-{self.chunk_ms:g}ms"
        return base + mode_suffix(decoding)


@dataclass(frozen=True)
class _Passes:
    """Which passes give a row its figures (:meth:`FbankBackend._passes`): ``batched``, its WER
    from the batched pass (else from the batch-1 pass); ``sample``, the utterances of the batch-1
    pass (None: all); ``checked``, whether ``meta["check"]`` gets an entry for the row."""

    batched: bool
    sample: int | None
    checked: bool


def whole_subset_check(timed: Decoded) -> dict:
    """The check entry of a row whose WER comes from its batch-1 pass over every utterance:
    no batched pass ran, so nothing was compared."""
    return {
        "utts": 0,
        "differ": 0,
        "cut_ids": [],
        "wer_from": "batch-1",
        "note": f"WER from batch-1 decoding of all {len(timed.hyps)} utterances (the RTF's "
        "sample covers the subset): no batched pass, nothing to compare",
    }


def transcripts_differ(timed: Decoded, batched: Decoded, check_utts: int | None) -> dict:
    """The check of a batched row: of the first ``check_utts`` (None: all) utterances of the
    batch-1 pass ``timed``, how many transcripts differ from ``batched``'s, and which (the
    first 10 cut ids)."""
    cut_ids = list(timed.hyps)[:check_utts]
    differ = [c for c in cut_ids if timed.hyps[c] != batched.hyps[c]]
    return {"utts": len(cut_ids), "differ": len(differ), "cut_ids": differ[:10]}


class FbankBackend(Backend):
    """What torch and onnx share: the rows of our models (module docstring)."""

    def __init__(self, settings, corpus) -> None:
        super().__init__(settings, corpus)
        self._searches: dict[tuple[str, str], CtcSearch] = {}
        self._num_utts: dict[str, int] = {}  # subset -> cuts in its cuts file

    def runs(self, loaded) -> bool:
        return isinstance(loaded, LoadedModel)

    def check(self, name: str, loaded: LoadedModel) -> None:
        if getattr(loaded.model, "streaming", False):
            for chunk_ms in self.settings.chunk_sizes_ms:
                self.chunk_size(name, loaded, chunk_ms)
        for decoding in self.settings.decodings:  # a missing LM or lexicon fails now
            self._search(loaded, decoding)

    def meta(self) -> dict:
        return {"check": self.checks}

    def _search(self, loaded: LoadedModel, decoding: str) -> CtcSearch:
        key = (loaded.tokenizer.fingerprint, decoding)
        if key not in self._searches:
            self._searches[key] = make_search(decoding, loaded.tokenizer, self.settings.beam)
        return self._searches[key]

    def _contexts(self, name: str, loaded: LoadedModel) -> list[_Context]:
        contexts = [_Context(None, None, None)] if self.settings.full_context else []
        if getattr(loaded.model, "streaming", False):
            left_chunks = loaded.model.resolve_left_chunks(self.settings.left_chunks)
            for chunk_ms in self.settings.chunk_sizes_ms:
                chunk_size = self.chunk_size(name, loaded, chunk_ms)
                contexts.append(_Context(chunk_ms, chunk_size, left_chunks))
        return contexts

    def rows(self, name: str, loaded: LoadedModel, subset: str) -> list[ResultRow]:
        """Per context: the finished rows read back, one batched pass for every fp32 row left
        (all its decodings), then each row's batch-1 pass; in the report's order (decoding,
        context, quantize)."""
        done: dict[tuple, ResultRow] = {}
        contexts = self._contexts(name, loaded)
        for context in contexts:
            todo = {}
            for decoding in self.settings.decodings:
                for quantize in self.settings.quantize:
                    fp = self._fingerprint(name, subset, context, decoding, quantize)
                    key = key_of(name, subset, context.mode(decoding), quantize)
                    row = self.finished(key, fp)
                    if row is None:
                        todo[decoding, quantize] = fp
                    else:
                        done[decoding, context, quantize] = row
            passes = {q: self._passes(subset, q) for q in self.settings.quantize}
            batched = self._batched(
                name, loaded, subset, context, [d for d, q in todo if passes[q].batched]
            )
            for (decoding, quantize), fp in todo.items():
                search = self._search(loaded, decoding)
                scored = batched[decoding] if passes[quantize].batched else None
                row = self._row(
                    name, loaded, subset, context, quantize, search, passes[quantize], scored
                )
                done[decoding, context, quantize] = self.keep(fp, row)
        return [
            done[d, c, q]
            for d in self.settings.decodings
            for c in contexts
            for q in self.settings.quantize
        ]

    def _fingerprint(self, name, subset, context: _Context, decoding: str, quantize: str) -> str:
        batched = {} if quantize == "int8" else {
            "device": self.settings.device, "max_duration": self.settings.max_duration,
            "check_utts": self.settings.check_utts,
        }  # fmt: skip
        return self.fingerprint(
            name, subset, mode=context.mode(decoding), chunk_size=context.chunk_size,
            left_chunks=context.left_chunks, quantize=quantize, **batched,
            **self.search_parts(decoding),
        )  # fmt: skip

    def _batched(self, name, loaded, subset, context: _Context, decodings) -> dict[str, Decoded]:
        """Decoding name -> the batched pass of ``context`` searched by it (none: no pass)."""
        if not decodings:
            return {}
        searches = {d: self._search(loaded, d) for d in decodings}
        desc = f"{name} {context.mode('greedy')} batched ({', '.join(decodings)})"
        return decode_batched(
            loaded, self.corpus.batches(subset), self.settings.device, desc, searches,
            context.chunk_size, -1 if context.left_chunks is None else context.left_chunks,
        )  # fmt: skip

    @abstractmethod
    def _decoder(self, name, loaded, chunk_size, left_chunks, quantize, search) -> Decoder:
        """The batch-1 decoder of one row (offline if ``chunk_size`` is None)."""

    def _graph_mb(self, name, quantize, chunk_size, left_chunks) -> float | None:
        """MB of the graph file that decodes a row; None where no graph file runs."""
        return None

    def _timed(self, decoder: Decoder, subset: str, max_utts, desc: str):
        rtf = self.settings.rtf
        return decode_one_at_a_time(
            decoder,
            utterances(self.corpus.batches(subset)),
            threads=rtf.threads,
            warmup_utts=rtf.warmup_utts,
            max_utts=max_utts,
            desc=desc,
            total=None,
        )

    def _passes(self, subset: str, quantize: str) -> _Passes:
        """Which passes the rows of ``subset`` at ``quantize`` get (module docstring): an int8
        row, and an fp32 row whose batch-1 pass decodes the whole subset anyway (the RTF's
        sample covers it, and ``check_utts`` does not ask to compare every transcript), take
        WER and RTF from one batch-1 pass over every utterance; other fp32 rows, the WER from
        the batched pass, the RTF and the check from a batch-1 pass over the sample."""
        if quantize == "int8":
            return _Passes(batched=False, sample=None, checked=False)
        rtf, check = self.settings.rtf.max_utts, self.settings.check_utts
        if check is not None and (rtf is None or rtf >= self._subset_size(subset)):
            return _Passes(batched=False, sample=None, checked=True)
        sample = None if rtf is None or check is None else max(rtf, check)
        return _Passes(batched=True, sample=sample, checked=True)

    def _subset_size(self, subset: str) -> int:
        """Cuts in ``subset``'s cuts file: at least as many as its batches hold."""
        if subset not in self._num_utts:
            self._num_utts[subset] = self.corpus.dm.layout.num_cuts(subset)
        return self._num_utts[subset]

    def _row(self, name, loaded, subset, context: _Context, quantize, search, passes, batched):
        """One row: WER from ``batched`` (None: from its batch-1 pass), RTF from the batch-1
        pass of the row's runtime over ``passes.sample``."""
        mode, tag = context.mode(search.name), " int8" if quantize == "int8" else ""
        decoder = self._decoder(
            name, loaded, context.chunk_size, context.left_chunks, quantize, search
        )
        timed = self._timed(decoder, subset, passes.sample, f"{name} {mode}{tag}, batch 1")
        if passes.checked:
            self._check(key_of(name, subset, mode, quantize), timed, batched)
        left_chunks = -1 if context.left_chunks is None else context.left_chunks
        return self.row(
            timed if batched is None else batched,
            timed,
            model=name,
            subset=subset,
            mode=mode,
            runtime=self.name,
            quantize=quantize,
            decoding=row_decoding(search.name),
            rtf_batch=None if batched is None else batched.rtf,
            batch_size=1,
            chunk_ms=context.chunk_ms,
            left_chunks=context.left_chunks,
            threads=self.settings.rtf.threads,
            threads_batch=None if batched is None else torch.get_num_threads(),
            **model_figures(loaded.model, context.chunk_size, left_chunks),
            graph_mb=self._graph_mb(name, quantize, context.chunk_size, context.left_chunks),
        )

    def _check(self, key: str, timed: Decoded, batched: Decoded | None) -> None:
        """``meta["check"][key]``: the batch-1 transcripts against ``batched`` (None: the WER
        is the batch-1 pass's own, nothing to compare)."""
        if batched is None:
            self.checks[key] = whole_subset_check(timed)
            return
        check = transcripts_differ(timed, batched, self.settings.check_utts)
        self.checks[key] = check
        if check["differ"]:
            log.warning(
                "CHECK FAILED: %s: %d of the first %d transcripts of the batch-1 %s pass differ "
                "from the batched ones (its WER is the batched one): %s",
                key, check["differ"], check["utts"], self.name, check["cut_ids"],
            )  # fmt: skip


class TorchBackend(FbankBackend):
    """runtime=torch: the checkpoint in torch eager."""

    name = "torch"

    def _decoder(self, name, loaded, chunk_size, left_chunks, quantize, search) -> Decoder:
        return make_decoder(
            "torch",
            loaded=loaded,
            chunk_size=chunk_size,
            left_chunks=left_chunks,
            threads=self.settings.rtf.threads,
            search=search,
        )


class OnnxBackend(FbankBackend):
    """runtime=onnx: every model exported into ``<out_dir>/onnx/<name>/`` (and ``int8/`` in it
    when ``quantize`` lists int8), checked against torch before any decoding, run by ONNX
    Runtime on ``rtf.threads`` intra-op threads."""

    name = "onnx"

    def __init__(self, settings, corpus) -> None:
        super().__init__(settings, corpus)
        self.diffs: dict[str, dict[str, float]] = {}

    def _dir(self, name: str, quantize: str = "none") -> Path:
        """``<out_dir>/onnx/<name>/``, its ``int8/`` for ``quantize="int8"``."""
        fp32 = self.settings.out_dir / "onnx" / name
        return fp32 / INT8_DIR if quantize == "int8" else fp32

    def prepare(self, name: str, loaded: LoadedModel) -> None:
        chunk_sizes = []
        if getattr(loaded.model, "streaming", False):
            chunk_sizes = [self.chunk_size(name, loaded, ms) for ms in self.settings.chunk_sizes_ms]
        int8 = "int8" if "int8" in self.settings.quantize else "none"
        left_chunks = loaded.model.resolve_left_chunks(self.settings.left_chunks)
        checked = self.export(
            name, loaded, self._dir(name), "asr_kd", chunk_sizes, left_chunks, quantize=int8
        )
        self.diffs[name] = checked.diffs
        checked.check(f"{name} ({loaded.path})")

    def meta(self) -> dict:
        return {**super().meta(), "onnx_max_abs_diff": self.diffs}

    def _decoder(self, name, loaded, chunk_size, left_chunks, quantize, search) -> Decoder:
        return make_decoder(
            "onnx",
            onnx=self._dir(name, quantize),
            chunk_size=chunk_size,
            left_chunks=left_chunks,
            threads=self.settings.rtf.threads,
            search=search,
        )

    def _graph_mb(self, name, quantize, chunk_size, left_chunks) -> float | None:
        path = graph_path(self._dir(name, quantize), chunk_size, left_chunks)
        return round(path.stat().st_size / 2**20, 3)
