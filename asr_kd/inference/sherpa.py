"""Decode audio with sherpa-onnx's recognizers on an ``asr-kd-export format=sherpa-onnx``
directory (``model.onnx``, ``tokens.txt``; :mod:`asr_kd.export.sherpa` describes the format):
:class:`SherpaStreamingDecoder` (``OnlineRecognizer``, a streaming student's step) and
:class:`SherpaOfflineDecoder` (``OfflineRecognizer``, any model with full context).

sherpa-onnx computes the fbank itself, so a decoder takes audio, not features. The offline one
gets each utterance whole; the streaming one is fed as a live source would feed it: one chunk's worth of samples (``C * factor * 10 ms``) per
``accept_waveform``, each ready chunk decoded at once. sherpa-onnx only runs whole chunks, so at
the end of an utterance the decoder appends ``hop + 2`` frames of silence (``tail_samples``)
before ``input_finished``: the chunk holding the last speech frames runs, where our runner's
``flush`` runs it padded and masked.

Usage:
    decode = SherpaStreamingDecoder("exp/sherpa/student_kd", threads=1)
    text = decode(samples)               # (N,) float32 in [-1, 1] at 16 kHz
    text = decode(samples, on_partial=lambda n, partial: print(n, partial))
    decode.fbank_seconds                 # of all calls so far: the time in accept_waveform

    decode = SherpaOfflineDecoder("exp/sherpa/teacher", threads=1)   # recognizer=offline export
    text = decode(samples)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from asr_kd.data.features import SAMPLE_RATE
from asr_kd.errors import BadFileError, ConfigError, MissingFileError

__all__ = [
    "OFFLINE_KIND",
    "ONLINE_KIND",
    "SherpaOfflineDecoder",
    "SherpaStreamingDecoder",
    "read_layout",
    "sherpa_kind",
    "sherpa_metadata",
]

_KEYS = ("chunk_size", "num_left_chunks", "subsampling_factor", "vocab_size")
FRAME_SAMPLES = 160  # 10 ms at 16 kHz
# What an exported model.onnx is (its metadata_props["asr_kd"]["kind"]): OnlineRecognizer's
# streaming step, or OfflineRecognizer's full-context graph.
ONLINE_KIND, OFFLINE_KIND = "sherpa-onnx", "sherpa-onnx-offline"


def sherpa_metadata(model: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an exported ``model.onnx`` (ours under ``asr_kd``, JSON)."""
    import onnx

    model = Path(model)

    if not model.is_file():
        raise MissingFileError(
            f"sherpa-onnx model not found: {model} (asr-kd-export format=sherpa-onnx writes it)"
        )
    return {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}


def sherpa_kind(model: str | Path, props: dict[str, str] | None = None) -> str:
    """``ONLINE_KIND`` or ``OFFLINE_KIND``: what an exported ``model.onnx`` is (from its
    metadata ``props``, read when not given)."""
    props = sherpa_metadata(model) if props is None else props
    kind = json.loads(props.get("asr_kd", "{}")).get("kind")
    if kind not in (ONLINE_KIND, OFFLINE_KIND):
        raise BadFileError(
            f"{model} is not an asr-kd-export format=sherpa-onnx model (kind {kind!r}): export "
            "it with asr-kd-export format=sherpa-onnx"
        )
    return kind


def _input_dim(props: dict[str, str]) -> int:
    """fbank bins the model reads (``input_dim`` of our metadata): sherpa-onnx's ``feature_dim``."""
    return int(json.loads(props.get("asr_kd", "{}")).get("input_dim", 80))


def read_layout(model: str | Path, props: dict[str, str] | None = None) -> dict[str, int]:
    """The integer sherpa-onnx metadata of an exported streaming ``model.onnx`` (``chunk_size``,
    ``num_left_chunks``, ``subsampling_factor``, ``vocab_size``), from ``props`` if given."""
    meta = sherpa_metadata(model) if props is None else props
    missing = [k for k in _KEYS if k not in meta]
    if missing:
        raise BadFileError(
            f"{model} lacks sherpa-onnx metadata {missing}: export it with asr-kd-export "
            "format=sherpa-onnx"
        )
    return {k: int(meta[k]) for k in _KEYS}


def _tokens_file(model_dir: Path) -> Path:
    tokens = model_dir / "tokens.txt"
    if not tokens.is_file():
        raise MissingFileError(f"{tokens} not found: export {model_dir} again")
    return tokens


def _text(tokens: Iterable[str]) -> str:
    """Text from the result's tokens: sherpa-onnx 2.0.1's result text drops a leading ``'``
    (measured: tokens ``["'", "X"]``, text ``"X"``). ``▁`` is a space in its symbol table
    already; any left is made one."""
    return " ".join("".join(tokens).replace("\u2581", " ").split())


def _check_rate(sample_rate: int) -> None:
    if sample_rate != SAMPLE_RATE:
        raise ConfigError(f"sample_rate {sample_rate} != {SAMPLE_RATE}: resample first")


# Why a decoder refuses a directory that holds the other recognizer's model, and the fix.
_WRONG_KIND = {
    OFFLINE_KIND: "is a streaming model for OnlineRecognizer: export it with recognizer=offline "
    "for OfflineRecognizer (or use SherpaStreamingDecoder)",
    ONLINE_KIND: "is a full-context model for OfflineRecognizer: export a streaming student with "
    "recognizer=online (or use SherpaOfflineDecoder)",
}


def _open_export(model_dir: str | Path, kind: str) -> tuple[Path, dict[str, str], Path]:
    """``model.onnx``, its metadata and ``tokens.txt`` of an export directory that holds a model
    of ``kind``; a one-line error for anything else."""
    model_dir = Path(model_dir)
    model = model_dir / "model.onnx"
    props = sherpa_metadata(model)
    if sherpa_kind(model, props) != kind:
        raise BadFileError(f"{model} {_WRONG_KIND[kind]}")
    return model, props, _tokens_file(model_dir)


class SherpaOfflineDecoder:
    """``sherpa_onnx.OfflineRecognizer.from_wenet_ctc`` on an ``asr-kd-export format=sherpa-onnx
    recognizer=offline`` directory: one utterance at a time, full context, greedy CTC.

    Args:
        model_dir: holds ``model.onnx`` and ``tokens.txt``.
        threads: sherpa-onnx's ONNX Runtime threads.
    """

    runtime = "sherpa-onnx"

    def __init__(self, model_dir: str | Path, threads: int = 1) -> None:
        import sherpa_onnx

        model, props, tokens = _open_export(model_dir, OFFLINE_KIND)
        self.fbank_seconds = 0.0  # in accept_waveform (the offline stream's fbank happens there)
        # (N + 80) // 160 fbank frames (Kaldi, no snip edges); fewer than subsampling_factor give
        # no encoder frame, and sherpa-onnx's run of the graph fails on them: no text, as ours.
        factor = int(props["subsampling_factor"])
        self.min_samples = factor * FRAME_SAMPLES - FRAME_SAMPLES // 2
        self.recognizer = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(
            model=str(model),
            tokens=str(tokens),
            num_threads=int(threads),
            sample_rate=SAMPLE_RATE,
            feature_dim=_input_dim(props),
        )

    def __call__(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
        """One utterance, ``samples (N,)`` float in [-1, 1] -> text."""
        _check_rate(sample_rate)
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size < self.min_samples:
            return ""
        stream = self.recognizer.create_stream()
        start = time.perf_counter()
        stream.accept_waveform(sample_rate, samples)
        self.fbank_seconds += time.perf_counter() - start
        self.recognizer.decode_stream(stream)
        return _text(stream.result.tokens)


class SherpaStreamingDecoder:
    """``sherpa_onnx.OnlineRecognizer.from_wenet_ctc`` on one export directory: greedy CTC, or
    with ``graph`` sherpa-onnx's CTC FST decoder (kaldi-decoder's ``FasterDecoder``) over an
    H, HL or HLG graph (``asr-kd-lm hlg`` builds one).

    Args:
        model_dir: holds ``model.onnx`` and ``tokens.txt`` (asr-kd-export format=sherpa-onnx).
        threads: sherpa-onnx's ONNX Runtime threads.
        graph: an OpenFst graph file, input labels token id + 1 (:mod:`asr_kd.inference.hlg`).
        max_active: the FST decoder's most active states per frame (sherpa-onnx's default).
    """

    runtime = "sherpa-onnx"

    def __init__(
        self,
        model_dir: str | Path,
        threads: int = 1,
        graph: str | Path | None = None,
        max_active: int = 3000,
    ) -> None:
        import sherpa_onnx

        model, props, tokens = _open_export(model_dir, ONLINE_KIND)
        layout = read_layout(model, props)
        self.fbank_seconds = 0.0  # in accept_waveform (sherpa-onnx computes the fbank there)
        self.chunk_size, self.left_chunks = layout["chunk_size"], layout["num_left_chunks"]
        hop = self.chunk_size * layout["subsampling_factor"]
        self.piece_samples = hop * FRAME_SAMPLES
        self.tail_samples = (hop + 2) * FRAME_SAMPLES
        self.recognizer = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
            tokens=str(tokens),
            model=str(model),
            chunk_size=self.chunk_size,
            num_left_chunks=self.left_chunks,
            num_threads=int(threads),
            sample_rate=SAMPLE_RATE,
            feature_dim=_input_dim(props),
        )
        if graph is not None:
            self._use_graph(Path(graph), max_active)

    def _use_graph(self, graph: Path, max_active: int) -> None:
        """The recognizer rebuilt with the FST decoder: ``from_wenet_ctc`` takes no graph (its
        ``from_zipformer2_ctc`` sibling does), but the config it made holds the field."""
        if not graph.is_file():
            raise MissingFileError(f"decoding graph not found: {graph} (asr-kd-lm hlg builds one)")
        config = self.recognizer.config
        fst_config = config.ctc_fst_decoder_config
        fst_config.graph, fst_config.max_active = str(graph), int(max_active)
        config.ctc_fst_decoder_config = fst_config
        self.recognizer.recognizer = type(self.recognizer.recognizer)(config)

    def _accept(self, stream, sample_rate: int, samples: np.ndarray) -> None:
        start = time.perf_counter()
        stream.accept_waveform(sample_rate, samples)
        self.fbank_seconds += time.perf_counter() - start

    def _decode_ready(self, stream) -> None:
        while self.recognizer.is_ready(stream):
            self.recognizer.decode_stream(stream)

    def __call__(
        self,
        samples: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        on_partial: Callable[[int, str], None] | None = None,
        pieces: Iterable[int] | None = None,
    ) -> str:
        """One utterance, ``samples (N,)`` float in [-1, 1] -> text. ``pieces``: sizes (in
        samples) to feed it in, cycled (default one chunk's worth); ``on_partial(samples fed,
        partial text)`` after each piece."""
        _check_rate(sample_rate)
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        sizes = list(pieces or [self.piece_samples])
        stream = self.recognizer.create_stream()
        start, i = 0, 0
        while start < samples.size:
            end = start + sizes[i % len(sizes)]
            self._accept(stream, sample_rate, samples[start:end])
            self._decode_ready(stream)
            start, i = end, i + 1
            if on_partial is not None:
                on_partial(min(start, samples.size), _text(self.recognizer.tokens(stream)))
        self._accept(stream, sample_rate, np.zeros(self.tail_samples, np.float32))
        stream.input_finished()
        self._decode_ready(stream)
        return _text(self.recognizer.tokens(stream))
