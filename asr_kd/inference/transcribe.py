"""Transcribing audio: files -> fbank -> a torch checkpoint or exported ONNX graphs -> text.

The library half of ``asr-kd-transcribe`` (:mod:`asr_kd.cli.transcribe` parses its arguments):
offline or streaming decoding of one utterance's features, and choosing the ONNX graph of an
export directory for the asked chunk and left context.

Usage:
    decode = torch_decode(args)           # or onnx_decode(args); args as asr-kd-transcribe's
    text = transcribe_file(decode, Path("speech.wav"))
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from google.protobuf.message import DecodeError

from asr_kd.data.features import FRAME_SHIFT_MS, compute_fbank, load_audio
from asr_kd.inference.decoders import StreamingGreedyDecoder, feed_chunks
from asr_kd.inference.onnx import (
    FULL_FILE,
    STEP_GLOB,
    OnnxCTC,
    OnnxStreamingCTC,
    OnnxStreamingDecoder,
    read_metadata,
)
from asr_kd.models.decode import greedy_ctc
from asr_kd.models.loading import LoadedModel, load_model
from asr_kd.models.streaming import chunk_frames

__all__ = [
    "DEFAULT_CHUNK_MS",
    "Refused",
    "onnx_decode",
    "torch_decode",
    "transcribe_file",
    "transcribe_offline",
    "transcribe_onnx_streaming",
    "transcribe_streaming",
]

DEFAULT_CHUNK_MS = 320

OnPartial = Callable[[float, str], None]
Decode = Callable[[torch.Tensor, OnPartial | None], str]  # (feats (T, 80), on_partial) -> text


class Refused(Exception):
    """The model cannot be used as asked (exit status 2, before any file is read)."""


@torch.inference_mode()
def transcribe_offline(loaded: LoadedModel, feats: torch.Tensor) -> str:
    """Full-context greedy CTC of one utterance; ``feats`` (T, 80) raw fbank."""
    log_probs, out_lens = loaded.model(feats.unsqueeze(0), torch.tensor([feats.shape[0]]))
    ids = greedy_ctc(log_probs, out_lens, blank_id=loaded.tokenizer.blank_id)[0]
    return loaded.tokenizer.decode(ids)


def _stream(decoder, feats: torch.Tensor, step: int, on_partial: OnPartial | None) -> str:
    """``feed_chunks`` with ``on_partial(seconds_fed, text)``. Torch and ONNX decoders alike."""
    report = None
    if on_partial is not None:

        def report(frames: int, text: str) -> None:
            on_partial(frames * FRAME_SHIFT_MS / 1000.0, text)

    return feed_chunks(decoder, feats, step, report)


@torch.inference_mode()
def transcribe_streaming(
    loaded: LoadedModel,
    feats: torch.Tensor,
    chunk_ms: int,
    left_chunks: int,
    on_partial: OnPartial | None = None,
) -> str:
    """Chunk-by-chunk decoding; ``on_partial(seconds_fed, text)`` is called after every chunk."""
    model = loaded.model
    chunk_size = chunk_frames(model, chunk_ms, "--chunk-ms")
    decoder = StreamingGreedyDecoder(model, loaded.tokenizer, chunk_size, left_chunks)
    return _stream(decoder, feats, chunk_size * model.subsampling_factor, on_partial)


def transcribe_onnx_streaming(
    decoder: OnnxStreamingDecoder, feats: torch.Tensor, on_partial: OnPartial | None = None
) -> str:
    """``transcribe_streaming`` through an ONNX step graph (its chunk and left context)."""
    decoder.reset()
    step = decoder.model.chunk_size * decoder.model.meta["subsampling_factor"]
    return _stream(decoder, feats, step, on_partial)


# ---------------------------------------------------------------------------- torch checkpoint
def torch_decode(args: argparse.Namespace) -> Decode:
    try:
        loaded = load_model(args.ckpt)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise Refused(f"cannot load checkpoint {args.ckpt}: {err}") from err
    if not args.streaming:
        return lambda feats, on_partial: transcribe_offline(loaded, feats)
    if not getattr(loaded.model, "streaming", False):
        raise Refused(
            f"{args.ckpt} holds a full-context model (streaming=False); --streaming needs "
            "a streaming student. Drop --streaming to decode it offline."
        )
    chunk_ms = DEFAULT_CHUNK_MS if args.chunk_ms is None else args.chunk_ms
    try:
        chunk_frames(loaded.model, chunk_ms, "--chunk-ms", str(args.ckpt))
    except ValueError as err:
        raise Refused(str(err)) from err
    left_chunks = loaded.model.resolve_left_chunks(args.left_chunks)
    if left_chunks < -1:
        raise Refused(f"--left-chunks {left_chunks}: must be >= 0, or -1 for unlimited context")
    return lambda feats, on_partial: transcribe_streaming(
        loaded, feats, chunk_ms, left_chunks, on_partial
    )


# ---------------------------------------------------------------------------- ONNX graphs
def _graph_meta(path: Path) -> dict:
    if not path.is_file():
        raise Refused(f"ONNX graph not found: {path}")
    try:
        return read_metadata(path)
    except (OSError, ValueError, DecodeError) as err:
        raise Refused(f"cannot load ONNX graph {path}: {err}") from err


def _chunk_ms(meta: dict) -> int:
    return int(meta["chunk_size"]) * int(meta["frame_shift_ms"])


def _describe(path: Path, meta: dict) -> str:
    return f"{path.name} ({_chunk_ms(meta)} ms, left_chunks {meta['left_chunks']})"


def _full_graph(path: Path) -> Path:
    """``--onnx`` without ``--streaming``: ``full.onnx`` itself or in the directory ``path``."""
    if path.is_dir():
        if not (path / FULL_FILE).is_file():
            raise Refused(
                f"{path} holds no {FULL_FILE} (the offline graph asr-kd-export writes); pass "
                "--streaming to use its step graphs, or pass a full.onnx"
            )
        path = path / FULL_FILE
    meta = _graph_meta(path)
    if meta.get("kind") == "step":
        raise Refused(
            f"{path} is a streaming step graph ({_chunk_ms(meta)} ms chunks): decode it with "
            f"--streaming, or pass {FULL_FILE} (or its directory) to decode offline"
        )
    if meta.get("kind") != "full":
        raise Refused(f"{path} is a {meta.get('kind')!r} graph, expected {FULL_FILE}")
    return path


def _step_graph(path: Path, chunk_ms: int | None, left_chunks: int | None) -> Path:
    """``--onnx --streaming``: the step graph ``path``, or the one in directory ``path`` with
    ``chunk_ms`` (default 320) and, if given, ``left_chunks``. The graph fixes both."""
    if path.is_file():
        meta = _graph_meta(path)
        if meta.get("kind") != "step":
            raise Refused(
                f"{path} is a full-context graph: --streaming needs a step graph "
                "stream-c<C>-l<LC>.onnx (asr-kd-export of a streaming checkpoint with "
                f"chunk_sizes_ms=[...]) or the directory holding it; drop --streaming to "
                f"decode {path} offline"
            )
        if chunk_ms is not None and chunk_ms != _chunk_ms(meta):
            raise Refused(
                f"--chunk-ms {chunk_ms} does not match {path}, a step graph of "
                f"{_chunk_ms(meta)} ms chunks (fixed at export): drop --chunk-ms, or export "
                f"chunk_sizes_ms=[{chunk_ms}] and pass that graph"
            )
        _check_left_chunks(path, meta, left_chunks)
        return path
    if not path.is_dir():
        raise Refused(f"ONNX graph or directory not found: {path}")
    chunk_ms = DEFAULT_CHUNK_MS if chunk_ms is None else chunk_ms
    steps = {p: _graph_meta(p) for p in sorted(path.glob(STEP_GLOB))}
    if not steps:
        raise Refused(
            f"{path} holds no streaming step graph ({STEP_GLOB}): export a streaming "
            "checkpoint with asr-kd-export chunk_sizes_ms=[...], or drop --streaming"
        )
    found = [p for p, m in steps.items() if _chunk_ms(m) == chunk_ms]
    if left_chunks is not None:
        found = [p for p in found if steps[p]["left_chunks"] == left_chunks]
    available = ", ".join(_describe(p, m) for p, m in steps.items())
    if not found:
        wanted = "" if left_chunks is None else f" and --left-chunks {left_chunks}"
        raise Refused(
            f"no step graph in {path} for --chunk-ms {chunk_ms}{wanted}; "
            f"chunk sizes available: {available}"
        )
    if len(found) > 1:
        raise Refused(
            f"several step graphs in {path} have {chunk_ms} ms chunks: "
            f"{', '.join(_describe(p, steps[p]) for p in found)}; pick one with --left-chunks"
        )
    return found[0]


def _check_left_chunks(path: Path, meta: dict, left_chunks: int | None) -> None:
    if left_chunks is not None and left_chunks != int(meta["left_chunks"]):
        raise Refused(
            f"--left-chunks {left_chunks} does not match {path}, exported with left_chunks "
            f"{meta['left_chunks']} (the step graph's cache size fixes it): drop --left-chunks, "
            f"or export with left_chunks={left_chunks}"
        )


def onnx_decode(args: argparse.Namespace) -> Decode:
    if not args.streaming:
        model = OnnxCTC(_full_graph(args.onnx), args.threads)
        return lambda feats, on_partial: model.transcribe(feats)
    graph = _step_graph(args.onnx, args.chunk_ms, args.left_chunks)
    decoder = OnnxStreamingDecoder(OnnxStreamingCTC(graph, args.threads))  # reset per file
    return lambda feats, on_partial: transcribe_onnx_streaming(decoder, feats, on_partial)


# ---------------------------------------------------------------------------- command line
def transcribe_file(decode: Decode, path: Path) -> str:
    """Read, extract fbank (resampled to 16 kHz) and decode one file; partial transcripts (if
    ``decode`` streams) go to stderr. Raises ValueError if the file is unreadable."""
    samples, sample_rate = load_audio(path)
    feats = compute_fbank(samples, sample_rate)

    def show(seconds: float, text: str) -> None:
        print(f"[{path} {seconds:.2f}s] {text}", file=sys.stderr, flush=True)

    return decode(feats, show)
