"""One way to build a batch-1 decoder: torch or ONNX Runtime, offline or streaming, with any
search of :data:`~asr_kd.inference.search.DECODINGS` (greedy, beam, beam_lm).

``make_decoder`` is what ``asr-kd-evaluate`` (its batch-1 rows) and ``asr-kd-transcribe`` call to
turn one utterance's raw fbank into text; ``open_graph`` is the level below it (log-probs, no
text), used by ``asr_kd.export.check_export`` to compare a graph with torch.

=======  =====================================  ============================================
runtime  offline (``chunk_size=None``)           streaming (``chunk_size=C`` encoder frames)
=======  =====================================  ============================================
torch    eager ``forward`` + the search          ``StreamingGreedyDecoder`` (``forward_chunk``)
         (:func:`decode_offline`)
onnx     ``OnnxCTC`` on ``full.onnx``            ``OnnxStreamingDecoder`` on ``OnnxStreamingCTC``
                                                 (``stream-c<C>-l<LC>.onnx``)
=======  =====================================  ============================================

A streaming decoder is fed as a live microphone would feed it (:func:`feed_chunks`): one
``accept`` per ``C * subsampling_factor`` fbank frames (one chunk of encoder frames), then
``finalize``; ``on_partial(frames_fed, text)`` after every chunk. Its ``accept`` / ``finalize`` /
``reset`` are also there to be driven by hand.

Usage:
    decode = make_decoder("torch", loaded=load_model(ckpt), chunk_size=8, left_chunks=4)
    text = decode(feats)                          # feats (T, 80) raw fbank, torch or numpy
    text = decode(feats, on_partial=lambda frames, partial: print(frames, partial))
    decode = make_decoder("onnx", onnx="exp/onnx/student_kd", chunk_size=8, left_chunks=4)
    decode = make_decoder("onnx", onnx="exp/onnx/teacher")           # full.onnx, offline
    search = make_search("beam_lm", loaded.tokenizer, BeamSettings(lm="lm/3gram.arpa"))
    decode = make_decoder("onnx", onnx="exp/onnx/student_kd", chunk_size=8, left_chunks=4,
                          search=search)

    runner = open_graph("exp/onnx/student_kd/stream-c8-l4.onnx", streaming=True)
    log_probs = np.concatenate([runner.accept(piece) for piece in pieces] + [runner.flush()])
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_kd.errors import ConfigError, MissingFileError
from asr_kd.inference.decoders import StreamingGreedyDecoder, decode_offline, feed_chunks
from asr_kd.inference.onnx import (
    FULL_FILE,
    STEP_GLOB,
    OnnxCTC,
    OnnxStreamingCTC,
    OnnxStreamingDecoder,
    step_file_name,
)
from asr_kd.inference.search import CtcSearch, GreedySearch
from asr_kd.models.loading import LoadedModel

__all__ = [
    "RUNTIMES",
    "Decoder",
    "OfflineDecoder",
    "StreamingDecoder",
    "graph_path",
    "make_decoder",
    "open_graph",
]

RUNTIMES = ("torch", "onnx")

OnPartial = Callable[[int, str], None]  # (fbank frames fed so far, partial transcript)


class Decoder:
    """One utterance's raw fbank ``feats`` (T, F) -> text at batch size 1.

    ``decoder(feats, on_partial=None) -> str``; ``chunk_size`` (encoder frames) and
    ``left_chunks`` are None offline. Made by :func:`make_decoder`.
    """

    runtime: str
    chunk_size: int | None = None
    left_chunks: int | None = None

    @property
    def streaming(self) -> bool:
        return self.chunk_size is not None

    def __call__(self, feats: Any, on_partial: OnPartial | None = None) -> str:
        raise NotImplementedError


class OfflineDecoder(Decoder):
    """The whole utterance at once (full context): ``transcribe(feats) -> text``; there are no
    partial transcripts, so ``on_partial`` is never called."""

    def __init__(self, runtime: str, transcribe: Callable[[Any], str]) -> None:
        self.runtime = runtime
        self._transcribe = transcribe

    def __call__(self, feats: Any, on_partial: OnPartial | None = None) -> str:
        return self._transcribe(feats)


class StreamingDecoder(Decoder):
    """A streaming decoder ``stream`` (``accept`` / ``finalize`` / ``reset``, a partial transcript
    per ``accept``) fed ``step = chunk_size * subsampling_factor`` fbank frames per ``accept``.

    ``decoder(feats)`` resets the stream, so one decoder (one ONNX Runtime session) serves any
    number of utterances. ``as_input`` converts ``feats`` for the runtime once per utterance.
    """

    def __init__(
        self,
        runtime: str,
        stream: Any,
        chunk_size: int,
        left_chunks: int,
        subsampling_factor: int,
        as_input: Callable[[Any], Any],
    ) -> None:
        self.runtime, self.stream = runtime, stream
        self.chunk_size, self.left_chunks = chunk_size, left_chunks
        self.step = chunk_size * subsampling_factor
        self._as_input = as_input

    def accept(self, feats_chunk: Any) -> str:
        """Feed (t, F) raw fbank frames, any t; return the partial transcript."""
        return self.stream.accept(self._as_input(feats_chunk))

    def push(self, feats_chunk: Any) -> None:
        """Feed (t, F) raw fbank frames, any t, without making a partial transcript."""
        self.stream.push(self._as_input(feats_chunk))

    def finalize(self) -> str:
        """End of utterance: decode the buffered tail; the final transcript."""
        return self.stream.finalize()

    def reset(self) -> None:
        """Start a new utterance."""
        self.stream.reset()

    @torch.inference_mode()
    def __call__(self, feats: Any, on_partial: OnPartial | None = None) -> str:
        self.stream.reset()
        return feed_chunks(self.stream, self._as_input(feats), self.step, on_partial)


def _numpy(feats: Any) -> np.ndarray:
    return feats.numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float32)


def make_decoder(
    runtime: str,
    *,
    loaded: LoadedModel | None = None,
    onnx: str | Path | None = None,
    chunk_size: int | None = None,
    left_chunks: int | None = None,
    threads: int = 1,
    search: CtcSearch | None = None,
) -> Decoder:
    """The batch-1 decoder of a checkpoint (``runtime="torch"``) or of its exported graphs
    (``runtime="onnx"``), offline when ``chunk_size`` is None, else streaming.

    Args:
        runtime: ``"torch"`` (eager, needs ``loaded``) or ``"onnx"`` (ONNX Runtime, needs
            ``onnx``; the tokenizer is the one in the graph's metadata).
        loaded: the checkpoint's model and tokenizer (torch).
        onnx: a graph written by ``asr-kd-export``, or its export directory, in which
            ``chunk_size`` and ``left_chunks`` name the graph (:func:`graph_path`).
        chunk_size: encoder frames per chunk; None = full context.
        left_chunks: attention left context in chunks (streaming). None: the model's default
            (torch), the graph's own (an ONNX step graph file); a step graph fixes it at export,
            so a value given must match it.
        threads: ONNX Runtime intra-op threads. Torch runs on ``torch.get_num_threads()``, which
            the caller sets (evaluate per timed pass, transcribe once).
        search: what turns log-probs into text (``asr_kd.inference.search.make_search``, built
            once: a beam search loads its LM); None: greedy. A beam search serves one decoder.
    """
    if runtime == "torch":
        if loaded is None:
            raise TypeError("make_decoder('torch') needs loaded= (a LoadedModel)")
        search = search or GreedySearch(loaded.tokenizer)
        return _torch_decoder(loaded, chunk_size, left_chunks, search)
    if runtime == "onnx":
        if onnx is None:
            raise TypeError("make_decoder('onnx') needs onnx= (a graph or an export directory)")
        return _onnx_decoder(Path(onnx), chunk_size, left_chunks, threads, search)
    raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")


def _torch_decoder(loaded: LoadedModel, chunk_size: int | None, left_chunks: int | None, search):
    model, tokenizer = loaded.model, loaded.tokenizer
    if chunk_size is None:
        return OfflineDecoder(
            "torch", lambda feats: decode_offline(model, tokenizer, feats, search)
        )
    if not getattr(model, "streaming", False):
        raise ConfigError(
            f"{loaded.path} holds a full-context model (streaming=False): it has no streaming "
            f"path for chunk_size {chunk_size}; decode it offline (chunk_size=None)"
        )
    left_chunks = model.resolve_left_chunks(left_chunks)
    stream = StreamingGreedyDecoder(model, tokenizer, chunk_size, left_chunks, search)
    factor = model.subsampling_factor
    return StreamingDecoder("torch", stream, chunk_size, left_chunks, factor, torch.as_tensor)


def _onnx_decoder(onnx: Path, chunk_size, left_chunks, threads: int, search: CtcSearch | None):
    path = graph_path(onnx, chunk_size, left_chunks)
    runner = open_graph(path, streaming=chunk_size is not None, threads=threads)
    search = search or GreedySearch(runner.tokenizer)
    if chunk_size is None:
        return OfflineDecoder("onnx", lambda feats: runner.transcribe(feats, search))
    asked = (chunk_size, runner.left_chunks if left_chunks is None else left_chunks)
    if asked != (runner.chunk_size, runner.left_chunks):
        raise ConfigError(
            f"{path} is a step graph of chunk_size {runner.chunk_size}, left_chunks "
            f"{runner.left_chunks} (fixed at export), asked for chunk_size {asked[0]}, "
            f"left_chunks {asked[1]}: export that chunk and left context, or pass that graph"
        )
    factor = int(runner.meta["subsampling_factor"])
    stream = OnnxStreamingDecoder(runner, search.tokenizer, search)  # reset per utterance
    return StreamingDecoder("onnx", stream, runner.chunk_size, runner.left_chunks, factor, _numpy)


def graph_path(onnx: str | Path, chunk_size: int | None, left_chunks: int | None) -> Path:
    """``onnx`` itself if it is not a directory; in an export directory, ``full.onnx``
    (``chunk_size`` None) or the step graph ``stream-c<chunk_size>-l<left_chunks>.onnx``.

    >>> graph_path("/nonexistent/stream-c8-l4.onnx", None, None).name
    'stream-c8-l4.onnx'
    """
    onnx = Path(onnx)
    if not onnx.is_dir():
        return onnx
    if chunk_size is None:
        return onnx / FULL_FILE
    if left_chunks is None:
        raise ConfigError(
            f"a streaming graph of export directory {onnx} is named by its chunk and left "
            f"context: give left_chunks (it holds {sorted(p.name for p in onnx.glob(STEP_GLOB))})"
        )
    return onnx / step_file_name(chunk_size, left_chunks)


def open_graph(
    path: str | Path, *, streaming: bool, threads: int = 1
) -> OnnxCTC | OnnxStreamingCTC:
    """The ONNX Runtime runner of one exported graph, at the log-prob level (no text):
    ``OnnxStreamingCTC`` (``accept`` / ``flush``, the semantics of ``forward_chunk`` / ``flush``)
    for a step graph, ``OnnxCTC`` (``log_probs(feats)``) for ``full.onnx``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"ONNX graph not found: {path} (asr-kd-export writes {FULL_FILE} and, for a "
            f"streaming checkpoint, one {STEP_GLOB} per chunk size)"
        )
    return OnnxStreamingCTC(path, threads) if streaming else OnnxCTC(path, threads)
