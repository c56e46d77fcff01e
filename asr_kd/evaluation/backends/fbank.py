"""Our checkpoints decoded on precomputed fbank: runtime ``torch`` (eager) and ``onnx`` (the
graphs :func:`~asr_kd.export.onnx.export_and_check` writes into ``<out_dir>/onnx/<name>/``).

Rows of one model on one subset: ``full`` (WER: torch from the batched pass, onnx from the
timed one; RTF: batch size 1 on ``rtf.threads``), then one ``stream-<N>ms`` per chunk size
(streaming models; WER and RTF from the same batch-1 pass), each once per ``quantize`` entry
(int8: the ORT-quantised graphs, runtime=onnx only). All of it once per ``decoding`` entry:
greedy rows as named above, others with ``-<decoding>`` after the mode (``full-beam_lm``) and
their ``decoding`` key set. A search is built once per tokenizer and decoding (a beam search
loads its LM once) and serves every row that needs it.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import torch

from asr_kd.evaluation.backends.base import Backend, model_figures
from asr_kd.evaluation.rows import ResultRow
from asr_kd.export.onnx import export_and_check
from asr_kd.export.quantize import INT8_DIR
from asr_kd.inference.factory import Decoder, graph_path, make_decoder
from asr_kd.inference.search import CtcSearch, make_search, mode_suffix, row_decoding
from asr_kd.inference.timing import decode_full_batched, decode_one_at_a_time, utterances
from asr_kd.models.loading import LoadedModel

__all__ = ["FbankBackend", "OnnxBackend", "TorchBackend"]


class FbankBackend(Backend):
    """What torch and onnx share: the rows of our models (module docstring)."""

    scores_batched: ClassVar[bool]  # the WER of the batched pass, else of the timed one

    def __init__(self, settings, corpus) -> None:
        super().__init__(settings, corpus)
        self._searches: dict[tuple[str, str], CtcSearch] = {}

    def runs(self, loaded) -> bool:
        return isinstance(loaded, LoadedModel)

    def check(self, name: str, loaded: LoadedModel) -> None:
        if getattr(loaded.model, "streaming", False):
            for chunk_ms in self.settings.chunk_sizes_ms:
                self.chunk_size(name, loaded, chunk_ms)
        for decoding in self.settings.decodings:  # a missing LM or lexicon fails now
            self._search(loaded, decoding)

    def _search(self, loaded: LoadedModel, decoding: str) -> CtcSearch:
        key = (loaded.tokenizer.fingerprint, decoding)
        if key not in self._searches:
            self._searches[key] = make_search(decoding, loaded.tokenizer, self.settings.beam)
        return self._searches[key]

    def rows(self, name: str, loaded: LoadedModel, subset: str) -> list[ResultRow]:
        rows = []
        for decoding in self.settings.decodings:
            rows += self._decoding_rows(name, loaded, subset, self._search(loaded, decoding))
        return rows

    def _decoding_rows(self, name, loaded, subset: str, search: CtcSearch) -> list[ResultRow]:
        quantize, rows = self.settings.quantize, []
        if self.settings.full_context:
            rows += [self._full_row(name, loaded, subset, q, search) for q in quantize]
        if getattr(loaded.model, "streaming", False):
            num_utts = rows[0].num_utts if rows else None  # progress-bar total
            for chunk_ms in self.settings.chunk_sizes_ms:
                for q in quantize:
                    row = self._stream_row(name, loaded, subset, chunk_ms, num_utts, q, search)
                    rows.append(row)
        return rows

    @abstractmethod
    def _decoder(self, name, loaded, chunk_size, left_chunks, quantize, search) -> Decoder:
        """The batch-1 decoder of one row (offline if ``chunk_size`` is None)."""

    def _graph_mb(self, name, quantize, chunk_size, left_chunks) -> float | None:
        """MB of the graph file that decodes a row; None where no graph file runs."""
        return None

    def _max_utts(self) -> int | None:
        """Utterances timed by a full row's batch-1 pass (None: all)."""
        return None

    def _timed(self, decoder: Decoder, subset: str, max_utts, desc: str, total):
        rtf = self.settings.rtf
        return decode_one_at_a_time(
            decoder,
            utterances(self.corpus.batches(subset)),
            threads=rtf.threads,
            warmup_utts=rtf.warmup_utts,
            max_utts=max_utts,
            desc=desc,
            total=total,
        )

    def _full_row(self, name: str, loaded, subset: str, quantize: str, search) -> ResultRow:
        """Full context: WER from batched decoding (torch); RTF from batch size 1 on
        ``rtf.threads``. int8: WER and RTF of the int8 graph; no batched (torch fp32) pass."""
        int8, tag = quantize == "int8", " int8" if quantize == "int8" else ""
        mode, batched = "full" + mode_suffix(search.name), None
        if not int8:
            batches, device = self.corpus.batches(subset), self.settings.device
            batched = decode_full_batched(loaded, batches, device, f"{name} {mode}", search)
        max_utts = self._max_utts()
        total = len(batched.refs) if batched is not None and max_utts is None else None
        decoder = self._decoder(name, loaded, None, None, quantize, search)
        timed = self._timed(decoder, subset, max_utts, f"{name} {mode}{tag}, batch 1", total)
        return self.row(
            batched if self.scores_batched else timed,
            timed,
            model=name,
            subset=subset,
            mode=mode,
            runtime=self.name,
            quantize=quantize,
            decoding=row_decoding(search.name),
            rtf_batch=None if int8 else batched.rtf,
            batch_size=1,
            chunk_ms=None,
            left_chunks=None,
            threads=self.settings.rtf.threads,
            threads_batch=None if int8 else torch.get_num_threads(),
            **model_figures(loaded.model, None),
            graph_mb=self._graph_mb(name, quantize, None, None),
        )

    def _stream_row(self, name, loaded, subset, chunk_ms, num_utts, quantize, search):
        """The streaming path at one chunk size: WER and RTF from the same batch-1 pass."""
        chunk_size = self.chunk_size(name, loaded, chunk_ms)
        left_chunks = loaded.model.resolve_left_chunks(self.settings.left_chunks)
        mode = f"stream-{chunk_ms:g}ms{mode_suffix(search.name)}"
        tag = " int8" if quantize == "int8" else ""
        decoder = self._decoder(name, loaded, chunk_size, left_chunks, quantize, search)
        streamed = self._timed(decoder, subset, None, f"{name} {mode}{tag}", num_utts)
        return self.row(
            streamed,
            streamed,
            model=name,
            subset=subset,
            mode=mode,
            runtime=self.name,
            quantize=quantize,
            decoding=row_decoding(search.name),
            rtf_batch=None,
            batch_size=1,
            chunk_ms=chunk_ms,
            left_chunks=left_chunks,
            threads=self.settings.rtf.threads,
            threads_batch=None,
            **model_figures(loaded.model, chunk_size, left_chunks),
            graph_mb=self._graph_mb(name, quantize, chunk_size, left_chunks),
        )


class TorchBackend(FbankBackend):
    """runtime=torch: the checkpoint in torch eager."""

    name = "torch"
    scores_batched = True

    def _decoder(self, name, loaded, chunk_size, left_chunks, quantize, search) -> Decoder:
        return make_decoder(
            "torch",
            loaded=loaded,
            chunk_size=chunk_size,
            left_chunks=left_chunks,
            threads=self.settings.rtf.threads,
            search=search,
        )

    def _max_utts(self) -> int | None:
        return self.settings.rtf.max_utts


class OnnxBackend(FbankBackend):
    """runtime=onnx: every model exported into ``<out_dir>/onnx/<name>/`` (and ``int8/`` in it
    when ``quantize`` lists int8), checked against torch before any decoding, run by ONNX
    Runtime on ``rtf.threads`` intra-op threads."""

    name = "onnx"
    scores_batched = False  # the WER of the runtime that is timed

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
        checked = export_and_check(
            loaded, self._dir(name), "asr_kd", chunk_sizes, left_chunks, quantize=int8
        )
        self.diffs[name] = checked.diffs
        checked.check(f"{name} ({loaded.path})")

    def meta(self) -> dict:
        return {"onnx_max_abs_diff": self.diffs}

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
