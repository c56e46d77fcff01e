"""``asr-kd-transcribe``: audio files -> transcripts on stdout, offline or streaming.

Reads any format soundfile/librosa can (WAV, FLAC, OGG, MP3, ...) at any sample rate; the
audio is mixed to mono and resampled to 16 kHz by the same fbank extractor that made the
training features. The model is either a torch checkpoint (``--ckpt``: model config, weights,
CMVN and tokenizer are all inside it) or graphs written by ``asr-kd-export`` (``--onnx``: run by
ONNX Runtime, tokenizer and CMVN from the graph's metadata, no checkpoint and no torch model).

``--onnx PATH`` is a graph file or the export directory holding them: ``full.onnx`` decodes
offline; a step graph ``stream-c<C>-l<LC>.onnx`` decodes ``--streaming``, with its chunk
(``C`` output frames) and left context fixed at export. Given a directory, ``--streaming`` picks
the step graph whose chunk is ``--chunk-ms`` (and whose left context is ``--left-chunks`` if
given); given one step graph, ``--chunk-ms`` defaults to its chunk.

Output: one file prints just its transcript; several print ``<file>\\t<text>`` per line.
With ``--streaming`` the audio is fed in ``--chunk-ms`` chunks through the model's streaming
path, and the partial transcript after every chunk goes to stderr as
``[<file> <seconds>s] <partial text>``, so stdout stays the final transcripts only; torch and
ONNX Runtime print the same lines.
A file that cannot be read is reported on stderr, naming it; the others are still transcribed
and the exit status is 1. A model that cannot be used as asked exits with status 2.

Why argparse, not Hydra: this is a per-file tool whose main argument is a list of paths (shell
globs work), the model's config is already inside the checkpoint (nothing to compose), and it
should not create an output directory per call.

Usage:
    asr-kd-transcribe --ckpt exp/student_kd/checkpoints/last.ckpt speech.wav
    asr-kd-transcribe --ckpt exp/teacher/checkpoints/last.ckpt data/*.flac > transcripts.tsv
    asr-kd-transcribe --ckpt hf:facebook/wav2vec2-conformer-rope-large-960h-ft speech.flac
    asr-kd-transcribe --ckpt exp/student_kd/checkpoints/last.ckpt --streaming --chunk-ms 320 \\
        --left-chunks 4 speech.mp3
    asr-kd-transcribe --onnx exp/onnx/student_kd speech.wav                  # full.onnx
    asr-kd-transcribe --onnx exp/onnx/student_kd --streaming --chunk-ms 320 speech.wav
    asr-kd-transcribe --onnx exp/onnx/student_kd/stream-c8-l4.onnx --streaming speech.wav
    asr-kd-transcribe --onnx exp/onnx/student_kd --streaming --decoding beam_lm \
        --lm exp/lm/3gram.arpa --lm-weight 0.5 speech.wav
    asr-kd-transcribe --onnx exp/onnx/student_kd --streaming --decoding beam_lm \
        --lm exp/lm/3gram.arpa --hotwords names.txt speech.wav   # beam_lm_hotwords
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from asr_kd.errors import UserError
from asr_kd.inference.search import DECODINGS, BeamSettings, hotword_decoding
from asr_kd.inference.transcribe import (
    DEFAULT_CHUNK_MS,
    TranscribeOptions,
    open_decoder,
    transcribe_file,
)

__all__ = ["main"]


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asr-kd-transcribe",
        description="Transcribe audio files (CTC: greedy, or beam search with a word n-gram) "
        "with an asr_kd checkpoint (torch) or "
        "with the ONNX graphs asr-kd-export wrote (ONNX Runtime).",
    )
    p.add_argument("files", nargs="+", type=Path, help="audio files (any format, any rate)")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--ckpt",
        type=Path,
        metavar="PATH",
        help="a .ckpt from asr-kd-train/distill (torch), or hf:<dir|hub id>[@revision] for a "
        "transformers CTC model (offline, torch)",
    )
    model.add_argument(
        "--onnx",
        type=Path,
        metavar="PATH",
        help="an asr-kd-export graph (full.onnx offline, stream-c<C>-l<LC>.onnx with "
        "--streaming) or the directory holding them (ONNX Runtime; no checkpoint needed)",
    )
    p.add_argument(
        "--streaming",
        action="store_true",
        help="decode chunk by chunk with caches; partial transcripts go to stderr",
    )
    p.add_argument(
        "--chunk-ms",
        type=int,
        default=None,
        help=f"streaming chunk (default {DEFAULT_CHUNK_MS} ms, or with --onnx a step graph file's "
        "own chunk; an --onnx directory must hold a step graph of this chunk)",
    )
    p.add_argument(
        "--left-chunks",
        type=int,
        default=None,
        help="attention left context in chunks (-1 unlimited; default: the model's own; with "
        "--onnx it is fixed by the step graph and must match it)",
    )
    p.add_argument("--threads", type=_positive_int, default=1, help="CPU threads (default 1)")
    _search_options(p)
    return p


def _search_options(p: argparse.ArgumentParser) -> None:
    """``--decoding`` and the beam searches' settings (``conf/evaluate.yaml``'s ``beam``)."""
    beam = BeamSettings()
    p.add_argument(
        "--decoding",
        choices=sorted(DECODINGS),
        default="greedy",
        help="greedy (default), beam (no LM) or beam_lm (lexicon + word n-gram)",
    )
    p.add_argument("--lm", help="beam_lm: ARPA n-gram (.arpa, .arpa.gz) or KenLM binary")
    p.add_argument("--lexicon", help="beam_lm: words, first column (default: the LM's unigrams)")
    p.add_argument(
        "--lm-weight",
        type=float,
        default=beam.lm_weight,
        help=f"beam_lm: LM weight (default {beam.lm_weight}; asr-kd-lm tune)",
    )
    p.add_argument(
        "--word-score",
        type=float,
        default=beam.word_score,
        help=f"beam_lm: bonus per word (default {beam.word_score})",
    )
    p.add_argument("--beam-size", type=_positive_int, default=beam.size,
                   help=f"hypotheses kept per frame (default {beam.size})")  # fmt: skip
    p.add_argument("--beam-size-token", type=_positive_int, default=None,
                   help="tokens tried per frame, the most likely N (default: all)")  # fmt: skip
    p.add_argument("--prune-frames", type=_positive_int, default=None,
                   help="streaming beam: keep N frames of beam history (default: all)")  # fmt: skip
    p.add_argument(
        "--hotwords",
        metavar="FILE",
        help="bias the beam search towards these words (WORD or WORD<TAB>boost per line): "
        "--decoding beam or beam_lm becomes beam_hotwords or beam_lm_hotwords",
    )
    p.add_argument(
        "--hotword-boost",
        type=float,
        default=beam.hotword_boost,
        help=f"hotwords: log-score bonus per word where the file gives none "
        f"(default {beam.hotword_boost})",
    )


def _options(args: argparse.Namespace) -> TranscribeOptions:
    beam = BeamSettings(
        size=args.beam_size, size_token=args.beam_size_token, lm=args.lm, lexicon=args.lexicon, lm_weight=args.lm_weight,
        word_score=args.word_score, prune_frames=args.prune_frames, hotwords=args.hotwords,
        hotword_boost=args.hotword_boost,
    )  # fmt: skip
    decoding = args.decoding if args.hotwords is None else hotword_decoding(args.decoding)
    return TranscribeOptions(
        ckpt=args.ckpt, onnx=args.onnx, streaming=args.streaming, chunk_ms=args.chunk_ms,
        left_chunks=args.left_chunks, threads=args.threads, decoding=decoding, beam=beam,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        decoder = open_decoder(_options(args))
    except UserError as err:  # the model cannot be used as asked: before any file is read
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.files:
        try:
            text = transcribe_file(decoder, path)
        except (OSError, ValueError, RuntimeError) as err:
            failed += 1
            print(f"error: cannot transcribe {path}: {err}", file=sys.stderr)
            continue
        print(text if len(args.files) == 1 else f"{path}\t{text}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
