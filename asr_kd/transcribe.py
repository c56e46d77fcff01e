"""``asr-kd-transcribe``: audio files -> transcripts on stdout, offline or streaming.

Reads any format soundfile/librosa can (WAV, FLAC, OGG, MP3, ...) at any sample rate; the
audio is mixed to mono and resampled to 16 kHz by the same fbank extractor that made the
training features. Everything needed to decode (model config, weights, CMVN, tokenizer) comes
from the checkpoint itself.

Output: one file prints just its transcript; several print ``<file>\\t<text>`` per line.
With ``--streaming`` the audio is fed in ``--chunk-ms`` chunks through the model's streaming
path, and the partial transcript after every chunk goes to stderr as
``[<file> <seconds>s] <partial text>``, so stdout stays the final transcripts only.
A file that cannot be read is reported on stderr, naming it; the others are still transcribed
and the exit status is 1.

Why argparse, not Hydra: this is a per-file tool whose main argument is a list of paths (shell
globs work), the model's config is already inside the checkpoint (nothing to compose), and it
should not create an output directory per call.

Usage:
    asr-kd-transcribe --ckpt exp/student_kd/checkpoints/last.ckpt speech.wav
    asr-kd-transcribe --ckpt exp/teacher/checkpoints/last.ckpt data/*.flac > transcripts.tsv
    asr-kd-transcribe --ckpt exp/student_kd/checkpoints/last.ckpt --streaming --chunk-ms 320 \\
        --left-chunks 4 speech.mp3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from asr_kd.checkpoint import LoadedModel, load_model
from asr_kd.data.features import FRAME_SHIFT_MS, compute_fbank, load_audio
from asr_kd.models.decode import StreamingGreedyDecoder, greedy_ctc

__all__ = ["main", "transcribe_file", "transcribe_offline", "transcribe_streaming"]


@torch.inference_mode()
def transcribe_offline(loaded: LoadedModel, feats: torch.Tensor) -> str:
    """Full-context greedy CTC of one utterance; ``feats`` (T, 80) raw fbank."""
    log_probs, out_lens = loaded.model(feats.unsqueeze(0), torch.tensor([feats.shape[0]]))
    ids = greedy_ctc(log_probs, out_lens, blank_id=loaded.tokenizer.blank_id)[0]
    return loaded.tokenizer.decode(ids)


@torch.inference_mode()
def transcribe_streaming(
    loaded: LoadedModel, feats: torch.Tensor, chunk_ms: int, left_chunks: int, on_partial=None
) -> str:
    """Chunk-by-chunk decoding; ``on_partial(seconds_fed, text)`` is called after every chunk."""
    model = loaded.model
    chunk_size = _chunk_size(model, chunk_ms)
    decoder = StreamingGreedyDecoder(model, loaded.tokenizer, chunk_size, left_chunks)
    step = chunk_size * model.subsampling_factor
    for start in range(0, feats.shape[0], step):
        partial = decoder.accept(feats[start : start + step].unsqueeze(0))
        if on_partial is not None:
            fed_s = min(start + step, feats.shape[0]) * FRAME_SHIFT_MS / 1000.0
            on_partial(fed_s, partial)
    return decoder.finalize()


def _chunk_size(model, chunk_ms: int) -> int:
    shift = model.frame_shift_ms
    if chunk_ms <= 0 or chunk_ms % shift:
        raise ValueError(
            f"--chunk-ms {chunk_ms} is not a positive multiple of the model's output frame "
            f"shift {shift} ms"
        )
    return chunk_ms // shift


def transcribe_file(loaded: LoadedModel, path: Path, args: argparse.Namespace) -> str:
    """Read, extract fbank (resampled to 16 kHz) and decode one file. Raises ValueError if unreadable."""
    samples, sample_rate = load_audio(path)
    feats = compute_fbank(samples, sample_rate)
    if not args.streaming:
        return transcribe_offline(loaded, feats)

    def show(seconds: float, text: str) -> None:
        print(f"[{path} {seconds:.2f}s] {text}", file=sys.stderr, flush=True)

    return transcribe_streaming(loaded, feats, args.chunk_ms, args.left_chunks, show)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asr-kd-transcribe",
        description="Transcribe audio files with an asr_kd checkpoint (greedy CTC).",
    )
    p.add_argument("files", nargs="+", type=Path, help="audio files (any format, any rate)")
    p.add_argument("--ckpt", required=True, type=Path, help="a .ckpt from asr-kd-train/distill")
    p.add_argument(
        "--streaming",
        action="store_true",
        help="decode chunk by chunk with caches; partial transcripts go to stderr",
    )
    p.add_argument("--chunk-ms", type=int, default=320, help="streaming chunk (default 320 ms)")
    p.add_argument(
        "--left-chunks",
        type=int,
        default=None,
        help="attention left context in chunks (-1 unlimited; default: the model's own)",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        loaded = load_model(args.ckpt)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        print(f"error: cannot load checkpoint {args.ckpt}: {err}", file=sys.stderr)
        return 2
    if args.streaming and not getattr(loaded.model, "streaming", False):
        print(
            f"error: {args.ckpt} holds a full-context model (streaming=False); --streaming needs "
            "a streaming student. Drop --streaming to decode it offline.",
            file=sys.stderr,
        )
        return 2
    if args.streaming:
        try:
            _chunk_size(loaded.model, args.chunk_ms)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.left_chunks is None:
        args.left_chunks = int(getattr(loaded.model, "default_left_chunks", -1))
    failed = 0
    for path in args.files:
        try:
            text = transcribe_file(loaded, path, args)
        except (OSError, ValueError, RuntimeError) as err:
            failed += 1
            print(f"error: cannot transcribe {path}: {err}", file=sys.stderr)
            continue
        print(text if len(args.files) == 1 else f"{path}\t{text}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
