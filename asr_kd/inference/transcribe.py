"""Transcribing audio: files -> fbank -> a torch checkpoint or exported ONNX graphs -> text.

The library half of ``asr-kd-transcribe`` (:mod:`asr_kd.cli.transcribe` parses its arguments):
its options -> a decoder of :func:`asr_kd.inference.factory.make_decoder`, the same one
``asr-kd-evaluate`` decodes with (torch or ONNX Runtime, offline or streaming); choosing the ONNX
graph of an export directory for the asked chunk and left context; refusing what the model cannot
do, before any audio file is read (:class:`Refused`, ``MissingFileError``, ``BadFileError``: the
command prints them as one ``error:`` line and exits with status 2).

``--ckpt hf:<dir|hub id>[@revision]`` decodes with a transformers CTC model (offline, torch, its
own feature extractor on the 16 kHz samples).

``decoding`` (``--decoding``) picks the search of :data:`asr_kd.inference.search.DECODINGS`
(greedy, beam, beam_lm with ``beam``'s LM and lexicon), built once for every file.

Usage:
    decoder = open_decoder(TranscribeOptions(onnx=Path("exp/onnx/student_kd"), streaming=True))
    text = transcribe_file(decoder, Path("speech.wav"))
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from google.protobuf.message import DecodeError

from asr_kd.data.features import FRAME_SHIFT_MS, compute_fbank, load_audio, resample
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import BadFileError, ConfigError, MissingFileError, UserError
from asr_kd.inference.factory import Decoder, make_decoder
from asr_kd.inference.onnx import FULL_FILE, STEP_GLOB, read_metadata
from asr_kd.inference.search import BeamSettings, GreedySearch, make_search
from asr_kd.models.loading import load_model
from asr_kd.models.streaming import chunk_frames

__all__ = [
    "DEFAULT_CHUNK_MS",
    "AudioDecoder",
    "Refused",
    "TranscribeOptions",
    "onnx_decode",
    "open_decoder",
    "torch_decode",
    "transcribe_file",
]

DEFAULT_CHUNK_MS = 320


class Refused(ConfigError):
    """The model cannot be used as asked (exit status 2, before any file is read)."""


# ---------------------------------------------------------------------------- torch checkpoint
def _load(ckpt: Path | str):
    """The model ``--ckpt`` names (:func:`~asr_kd.models.loading.load_model`: any source)."""
    try:
        return load_model(ckpt)
    except UserError:
        raise
    except FileNotFoundError as err:
        raise MissingFileError(f"cannot load checkpoint {ckpt}: {err}") from err
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise BadFileError(f"cannot load checkpoint {ckpt}: {err}") from err


class AudioDecoder(Decoder):
    """A model that reads audio (``--ckpt hf:...``, ``reads_audio``): (N,) 16 kHz samples ->
    text, offline, in torch (its own feature extractor, not our fbank)."""

    runtime = "torch"
    reads_audio = True

    def __init__(self, loaded) -> None:
        self.loaded = loaded

    def __call__(self, samples, on_partial=None) -> str:
        samples = torch.as_tensor(samples, dtype=torch.float32)
        return self.loaded.transcribe(samples[None], torch.tensor([samples.shape[0]]))[0]


@dataclass(frozen=True)
class TranscribeOptions:
    """What to decode with: ``asr-kd-transcribe``'s options (its ``--help`` says each)."""

    ckpt: Path | str | None = None  # an asr_kd checkpoint or hf:<dir|hub id>[@revision]
    onnx: Path | None = None  # full.onnx, a step graph or an export directory
    streaming: bool = False
    chunk_ms: int | None = None  # None: DEFAULT_CHUNK_MS (torch), the graph's own (onnx)
    left_chunks: int | None = None  # None: the model's default
    threads: int = 1
    decoding: str = GreedySearch.name  # a DECODINGS name
    beam: BeamSettings = BeamSettings()


def open_decoder(options: TranscribeOptions) -> Decoder:
    """The decoder ``options`` ask for: ONNX Runtime with ``onnx``, else torch."""
    return onnx_decode(options) if options.onnx is not None else torch_decode(options)


def torch_decode(args: TranscribeOptions) -> Decoder:
    """``--ckpt``: offline, or ``--streaming`` in ``--chunk-ms`` chunks (default 320) with
    ``--left-chunks`` of attention context (default: the model's own). A model that reads audio
    (``--ckpt hf:...``, a transformers CTC model) decodes offline only."""
    loaded = _load(args.ckpt)
    if args.streaming and not getattr(loaded.model, "streaming", False):
        raise Refused(
            f"{args.ckpt} holds a full-context model (streaming=False); --streaming needs "
            "a streaming student. Drop --streaming to decode it offline."
        )
    if getattr(loaded.model, "reads_audio", False):
        if args.decoding != GreedySearch.name:
            raise Refused(f"--decoding {args.decoding}: {args.ckpt} decodes greedily only")
        return AudioDecoder(loaded)
    search = make_search(args.decoding, loaded.tokenizer, args.beam)
    if not args.streaming:
        return make_decoder("torch", loaded=loaded, search=search)
    chunk_ms = DEFAULT_CHUNK_MS if args.chunk_ms is None else args.chunk_ms
    try:
        chunk_size = chunk_frames(loaded.model, chunk_ms, "--chunk-ms", str(args.ckpt))
    except ValueError as err:
        raise Refused(str(err)) from err
    left_chunks = loaded.model.resolve_left_chunks(args.left_chunks)
    if left_chunks < -1:
        raise Refused(f"--left-chunks {left_chunks}: must be >= 0, or -1 for unlimited context")
    return make_decoder(
        "torch", loaded=loaded, chunk_size=chunk_size, left_chunks=left_chunks, search=search
    )


# ---------------------------------------------------------------------------- ONNX graphs
def _graph_meta(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(f"ONNX graph not found: {path}")
    try:
        return read_metadata(path)
    except (OSError, ValueError, DecodeError) as err:
        raise BadFileError(f"cannot load ONNX graph {path}: {err}") from err


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


def _step_graph(path: Path, chunk_ms: int | None, left_chunks: int | None) -> tuple[Path, dict]:
    """``--onnx --streaming``: the step graph ``path``, or the one in directory ``path`` with
    ``chunk_ms`` (default 320) and, if given, ``left_chunks``, and its metadata. The graph
    fixes both."""
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
        return path, meta
    if not path.is_dir():
        raise MissingFileError(f"ONNX graph or directory not found: {path}")
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
    return found[0], steps[found[0]]


def _check_left_chunks(path: Path, meta: dict, left_chunks: int | None) -> None:
    if left_chunks is not None and left_chunks != int(meta["left_chunks"]):
        raise Refused(
            f"--left-chunks {left_chunks} does not match {path}, exported with left_chunks "
            f"{meta['left_chunks']} (the step graph's cache size fixes it): drop --left-chunks, "
            f"or export with left_chunks={left_chunks}"
        )


def onnx_decode(args: TranscribeOptions) -> Decoder:
    """``--onnx``: ``full.onnx`` offline, or ``--streaming`` with a step graph (its chunk and left
    context), ONNX Runtime on ``--threads`` threads; one session for every file."""
    if not args.streaming:
        graph = _full_graph(args.onnx)
        search = _search(args, _graph_meta(graph))
        return make_decoder("onnx", onnx=graph, threads=args.threads, search=search)
    graph, meta = _step_graph(args.onnx, args.chunk_ms, args.left_chunks)
    chunk_size, search = int(meta["chunk_size"]), _search(args, meta)
    return make_decoder(
        "onnx", onnx=graph, chunk_size=chunk_size, threads=args.threads, search=search
    )


def _search(args: TranscribeOptions, meta: dict):
    """The search ``args`` ask for, over the tokenizer in a graph's metadata."""
    return make_search(args.decoding, Tokenizer.from_dict(meta["tokenizer"]), args.beam)


# ---------------------------------------------------------------------------- command line
def transcribe_file(decoder: Decoder, path: Path) -> str:
    """Read, extract fbank (resampled to 16 kHz) and decode one file; partial transcripts (if
    ``decoder`` streams) go to stderr as ``[<file> <seconds fed>s] <text>``. Raises ValueError
    if the file is unreadable."""
    samples, sample_rate = load_audio(path)
    if getattr(decoder, "reads_audio", False):
        return decoder(resample(samples, sample_rate))
    feats = compute_fbank(samples, sample_rate)

    def show(frames: int, text: str) -> None:
        print(
            f"[{path} {frames * FRAME_SHIFT_MS / 1000.0:.2f}s] {text}", file=sys.stderr, flush=True
        )

    return decoder(feats, show)
