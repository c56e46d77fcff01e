"""runtime sherpa-onnx: our checkpoints exported in sherpa-onnx's WeNet CTC format and decoded
by ``sherpa_onnx`` itself from each cut's audio (:mod:`asr_kd.inference.sherpa`).

Rows of one model on one subset: ``full-sherpa-onnx`` (with ``full_context``; exported into
``<out_dir>/sherpa/<name>/offline/``, ``OfflineRecognizer``), then per streaming model and
chunk size ``stream-<N>ms-sherpa-onnx`` (``<out_dir>/sherpa/<name>/c<C>-l<LC>/``,
``OnlineRecognizer``), on ``rtf.threads`` threads. Their RTF covers what sherpa-onnx does (fbank
from audio, model, greedy search); ``rtf_without_fbank`` leaves the fbank out, the other rows'
scope.

runtime sherpa-onnx-hlg (:class:`SherpaHlgBackend`): the same streaming exports decoded by the
``OnlineRecognizer`` with its CTC FST decoder on an HLG graph (``hlg.graph``, or built once per
tokenizer from ``beam.lm`` at ``beam.lm_weight`` / ``beam.word_score`` into
``<out_dir>/sherpa/HLG-<tokenizer fingerprint>.fst``, :mod:`asr_kd.inference.hlg`): rows
``stream-<N>ms-sherpa-onnx-hlg`` (``decoding`` hlg), streaming models only.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from asr_kd.data.features import SAMPLE_RATE, resample
from asr_kd.errors import ConfigError
from asr_kd.evaluation.backends.base import Backend, key_of, model_figures
from asr_kd.evaluation.resume import file_identity
from asr_kd.evaluation.rows import ResultRow
from asr_kd.evaluation.settings import SHERPA, SHERPA_HLG
from asr_kd.export.limits import check_left_chunks
from asr_kd.inference.timing import Decoded, utterances
from asr_kd.metrics import RaplCounters, Timer
from asr_kd.models.loading import LoadedModel

__all__ = ["HLG_RTF_SCOPE", "SHERPA_RTF_SCOPE", "SherpaBackend", "SherpaHlgBackend"]

SHERPA_RTF_SCOPE = "sherpa-onnx: fbank from audio + model + greedy CTC search (C++)"
HLG_RTF_SCOPE = "sherpa-onnx: fbank from audio + model + HLG search (kaldi-decoder, C++)"


def _audio(cut) -> np.ndarray:
    samples = cut.load_audio()[0]
    return resample(samples.astype("float32"), int(cut.sampling_rate), SAMPLE_RATE)


class SherpaBackend(Backend):
    """runtime=sherpa-onnx (module docstring)."""

    name = SHERPA
    offline_rows: ClassVar[bool] = True  # full-<name> rows (OfflineRecognizer)
    rtf_scope: ClassVar[str] = SHERPA_RTF_SCOPE
    decoding: ClassVar[str | None] = None  # the rows' ``decoding`` (None: greedy)
    diffs_key: ClassVar[str] = "sherpa_max_abs_diff"  # of the meta

    def __init__(self, settings, corpus) -> None:
        super().__init__(settings, corpus)
        self.diffs: dict[str, dict[str, float]] = {}

    def runs(self, loaded) -> bool:
        return isinstance(loaded, LoadedModel)

    def _streams(self, loaded) -> bool:
        return getattr(loaded.model, "streaming", False)

    def _variants(self, name: str, loaded: LoadedModel) -> list[tuple]:
        """``(chunk_ms, chunk_size, left_chunks)`` of each row: ``(None, None, None)`` (offline,
        full context) when ``full_context``, then one per chunk size of a streaming model."""
        offline = self.settings.full_context and self.offline_rows
        variants = [(None, None, None)] if offline else []
        if self._streams(loaded):
            left_chunks = loaded.model.resolve_left_chunks(self.settings.left_chunks)
            for chunk_ms in self.settings.chunk_sizes_ms:
                variants.append((chunk_ms, self.chunk_size(name, loaded, chunk_ms), left_chunks))
        return variants

    def _dir(self, name: str, chunk_size: int | None, left_chunks: int | None) -> Path:
        """``<out_dir>/sherpa/<name>/c<C>-l<LC>/`` (OnlineRecognizer), ``.../offline/`` for
        ``chunk_size=None`` (OfflineRecognizer)."""
        leaf = "offline" if chunk_size is None else f"c{chunk_size}-l{left_chunks}"
        return self.settings.out_dir / "sherpa" / name / leaf

    def check(self, name: str, loaded: LoadedModel) -> None:
        if self._streams(loaded) and self.settings.chunk_sizes_ms:
            left_chunks = loaded.model.resolve_left_chunks(self.settings.left_chunks)
            check_left_chunks(loaded, left_chunks, SHERPA)

    def prepare(self, name: str, loaded: LoadedModel) -> None:
        for _, chunk_size, left_chunks in self._variants(name, loaded):
            out = self._dir(name, chunk_size, left_chunks)
            chunk_sizes, recognizer = (
                ([], "offline") if chunk_size is None else ([chunk_size], "online")
            )
            checked = self.export(
                name, loaded, out, SHERPA, chunk_sizes, left_chunks, recognizer=recognizer
            )
            (diff,) = checked.diffs.values()
            self.diffs.setdefault(name, {})[out.name] = diff
            checked.check(f"{name} ({loaded.path}) in {out}")

    def meta(self) -> dict:
        import sherpa_onnx

        return {"sherpa_onnx": sherpa_onnx.__version__, self.diffs_key: self.diffs}

    def rows(self, name: str, loaded: LoadedModel, subset: str) -> list[ResultRow]:
        """Its rows; a row a former run finished with the same settings is read back."""
        rows = []
        for chunk_ms, chunk_size, left_chunks in self._variants(name, loaded):
            mode = self._mode(chunk_ms)
            fp = self.fingerprint(
                name, subset, mode=mode, chunk_size=chunk_size, left_chunks=left_chunks,
                **self._search_parts(),
            )  # fmt: skip
            row = self.finished(key_of(name, subset, mode, None), fp)
            if row is None:
                row = self.keep(
                    fp, self._row(name, loaded, subset, chunk_ms, chunk_size, left_chunks)
                )
            rows.append(row)
        return rows

    def _mode(self, chunk_ms: float | None) -> str:
        return f"full-{self.name}" if chunk_ms is None else f"stream-{chunk_ms:g}ms-{self.name}"

    def _search_parts(self) -> dict:
        """What the rows' search depends on beyond the export (greedy: nothing)."""
        return {}

    def _decoded(self, decode, subset: str) -> tuple[Decoded, float]:
        """One batch-1 pass of ``decode`` over the cuts' audio (audio seconds as the other rows
        count them: fbank frames), and the seconds of it that sherpa-onnx spent in its fbank."""
        cuts, warmup = self.corpus.cuts(subset), self.settings.rtf.warmup_utts
        hyps, refs, timer, audio_s, fbank_s = {}, {}, Timer(energy=RaplCounters()), 0.0, 0.0
        for n, utt in enumerate(utterances(self.corpus.batches(subset))):
            samples = _audio(cuts[utt.cut_id])
            if n < warmup:
                decode(samples)
            fbank_before = decode.fbank_seconds
            with timer:
                hyps[utt.cut_id] = decode(samples)
            fbank_s += decode.fbank_seconds - fbank_before
            refs[utt.cut_id], audio_s = utt.text, audio_s + utt.audio_s
        return Decoded.timed_by(timer, hyps, refs, audio_s), fbank_s  # CPU s, J: sherpa-onnx's too

    def _streaming_decoder(self, loaded: LoadedModel, out: Path, threads: int):
        """The decoder of a ``stream-<N>ms-<name>`` row on export directory ``out``."""
        from asr_kd.inference.sherpa import SherpaStreamingDecoder

        return SherpaStreamingDecoder(out, threads=threads)

    def _row(self, name, loaded, subset, chunk_ms, chunk_size, left_chunks) -> ResultRow:
        """WER and RTF (fbank included) from one batch-1 pass of sherpa-onnx over the cuts'
        audio. ``chunk_ms`` None: offline."""
        from asr_kd.inference.sherpa import SherpaOfflineDecoder

        threads, out = self.settings.rtf.threads, self._dir(name, chunk_size, left_chunks)
        offline = chunk_ms is None
        decode = (
            SherpaOfflineDecoder(out, threads=threads)
            if offline
            else self._streaming_decoder(loaded, out, threads)
        )
        decoded, fbank_s = self._decoded(decode, subset)
        return self.row(
            decoded,
            decoded,
            model=name,
            subset=subset,
            mode=self._mode(chunk_ms),
            runtime=self.name,
            rtf_scope=self.rtf_scope,
            decoding=self.decoding,
            rtf_without_fbank=(decoded.seconds - fbank_s) / decoded.audio_s,
            rtf_batch=None,
            batch_size=1,
            chunk_ms=chunk_ms,
            left_chunks=left_chunks,
            threads=threads,
            threads_batch=None,
            **model_figures(loaded.model, chunk_size, -1 if left_chunks is None else left_chunks),
            graph_mb=round((out / "model.onnx").stat().st_size / 2**20, 3),
        )


class SherpaHlgBackend(SherpaBackend):
    """runtime=sherpa-onnx-hlg (module docstring)."""

    name = SHERPA_HLG
    offline_rows = False
    rtf_scope = HLG_RTF_SCOPE
    decoding = "hlg"
    diffs_key = "sherpa_hlg_max_abs_diff"

    def __init__(self, settings, corpus) -> None:
        super().__init__(settings, corpus)
        self.graphs: dict[str, Path] = {}  # tokenizer fingerprint -> HLG.fst

    def check(self, name: str, loaded: LoadedModel) -> None:
        super().check(name, loaded)
        hlg, beam = self.settings.hlg, self.settings.beam
        if hlg.graph is None and beam.lm is None:
            raise ConfigError(
                f"runtime {SHERPA_HLG} needs a graph: hlg.graph=HLG.fst (asr-kd-lm hlg) or "
                "beam.lm=LM.arpa to build one from"
            )
        if hlg.graph is not None and not Path(hlg.graph).is_file():
            raise ConfigError(f"hlg.graph not found: {hlg.graph} (asr-kd-lm hlg builds one)")

    def prepare(self, name: str, loaded: LoadedModel) -> None:
        super().prepare(name, loaded)
        self._graph(loaded)

    def _graph(self, loaded: LoadedModel) -> Path:
        """``hlg.graph``, or the one built from ``beam.lm`` for ``loaded``'s tokenizer."""
        if self.settings.hlg.graph is not None:
            return Path(self.settings.hlg.graph)
        key = loaded.tokenizer.fingerprint
        if key not in self.graphs:
            from asr_kd.inference.hlg import write_hlg

            beam, out = self.settings.beam, self.settings.out_dir / "sherpa" / f"HLG-{key}.fst"
            write_hlg(
                loaded.tokenizer, beam.lm, out, beam.lm_weight, beam.word_score, beam.lexicon,
                beam.cache_dir,
            )  # fmt: skip
            self.graphs[key] = out
        return self.graphs[key]

    def _search_parts(self) -> dict:
        hlg, beam = self.settings.hlg, self.settings.beam
        graph = {"graph": file_identity(hlg.graph)} if hlg.graph is not None else {
            "lm": file_identity(beam.lm), "lexicon": file_identity(beam.lexicon),
            "lm_weight": beam.lm_weight, "word_score": beam.word_score,
        }  # fmt: skip
        return {"hlg": {**graph, "max_active": hlg.max_active}}

    def _streaming_decoder(self, loaded: LoadedModel, out: Path, threads: int):
        from asr_kd.inference.sherpa import SherpaStreamingDecoder

        max_active = self.settings.hlg.max_active
        return SherpaStreamingDecoder(
            out, threads=threads, graph=self._graph(loaded), max_active=max_active
        )

    def meta(self) -> dict:
        hlg, beam = self.settings.hlg, self.settings.beam
        graphs = [hlg.graph] if hlg.graph is not None else [str(p) for p in self.graphs.values()]
        built = {} if hlg.graph is not None else {
            "lm": beam.lm, "lexicon": beam.lexicon, "lm_weight": beam.lm_weight,
            "word_score": beam.word_score,
        }  # fmt: skip
        return {**super().meta(), "hlg": {"graphs": graphs, "max_active": hlg.max_active, **built}}
