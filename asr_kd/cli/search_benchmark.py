"""Streaming search benchmark: CPU ms per chunk after 5 s and after 60 s of audio decoded.

Prints figures; it is not a test (timings depend on the machine). One CPU thread, batch 1,
synthetic log-probs over the character vocabulary (:mod:`asr_kd.inference.search_cost`), a
3-gram of the same words for ``beam_lm``. For each decoding: without partial transcripts (what
``asr-kd-evaluate`` does), with one after every chunk (``asr-kd-transcribe --streaming``), and
with one after every chunk and ``prune_frames``; and the hotword searches (four hotwords that
occur in the text) without partials. The last column is the 60 s / 5 s ratio: 1.0
is a cost that does not grow with the audio already decoded.

Usage:
    python -m asr_kd.cli.search_benchmark                      # 320 ms chunks of 40 ms frames
    python -m asr_kd.cli.search_benchmark --prune-frames 25 --chunks 50 --decodings beam,beam_lm
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.inference.lm import build_arpa
from asr_kd.inference.search import BeamSettings, make_search
from asr_kd.inference.search_cost import chunk_cost_ms, spelled_log_probs

__all__ = ["main"]

_WORDS = (
    "THE OF AND TO IN WAS HE THAT IT HIS HAD FOR WITH AS YOU NOT BE SHE BUT AT ON HER WHICH "
    "THEY ALL BY THIS HAVE FROM SO WERE SAID ONE WHEN NO THERE IF WHAT OR WOULD THEM WILL ME "
    "MY AN WHO BEEN UPON OUT UP COULD MORE THEN THEIR INTO DID NOW SOME LITTLE TIME VERY"
).split()


_ROWS = (  # decoding, partials, prune_frames
    *((d, partials, prune) for d in ("beam", "beam_lm") for partials, prune in
      ((False, False), (True, False), (True, True))),
    ("beam_hotwords", False, False),
    ("beam_lm_hotwords", False, False),
)  # fmt: skip


def _text(seconds: float, frame_ms: int, frames_per_token: int, seed: int) -> str:
    """Random words from ``_WORDS``, enough characters for ``seconds`` of frames."""
    rng = np.random.default_rng(seed)
    chars = int(seconds * 1000 / frame_ms / frames_per_token) + 1
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(str(rng.choice(_WORDS)))
    return " ".join(words)[:chars].strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk-frames", type=int, default=8, help="frames per chunk (8)")
    parser.add_argument("--frame-ms", type=int, default=40, help="ms per frame (40)")
    parser.add_argument("--beam-size", type=int, default=BeamSettings.size)
    parser.add_argument("--prune-frames", type=int, default=50, help="the pruned rows' (50)")
    parser.add_argument("--chunks", type=int, default=40, help="timed chunks per point (40)")
    parser.add_argument("--noise", type=float, default=1.5, help="log-prob noise (1.5)")
    parser.add_argument(
        "--decodings",
        default=",".join(dict.fromkeys(d for d, _, _ in _ROWS)),
        help="the rows' decodings, comma-separated (default: all)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tokenizer, frames_per_token = Tokenizer.char(), 3
    seconds = 60.0 + args.chunks * args.chunk_frames * args.frame_ms / 1000 + 1
    text = _text(seconds, args.frame_ms, frames_per_token, seed=0)
    log_probs = spelled_log_probs(tokenizer, text, frames_per_token, args.noise)
    at = {s: int(s * 1000 / args.frame_ms) for s in (5, 60)}
    print(
        f"{args.chunk_frames} frames x {args.frame_ms} ms per chunk, beam {args.beam_size}, "
        f"char vocabulary, 1 thread, torch {torch.__version__}; CPU ms per chunk (median of "
        f"{args.chunks})"
    )
    print(f"{'decoding':16s} {'partials':8s} {'prune':>5s} {'at 5 s':>8s} {'at 60 s':>8s} ratio")
    with tempfile.TemporaryDirectory() as tmp:
        lm = Path(tmp) / "lm.arpa"
        build_arpa([_text(60, 40, 3, seed) for seed in range(1, 50)], lm, order=3)
        hotwords = Path(tmp) / "hotwords.txt"
        hotwords.write_text("LITTLE\nUPON\nVERY\nSOME TIME\n")
        for decoding, partials, prune in _ROWS:
            if decoding not in args.decodings.split(","):
                continue
            # only where used: the script also measures a checkout from before hotwords
            biased = {"hotwords": str(hotwords)} if decoding.endswith("_hotwords") else {}
            prune = args.prune_frames if prune else None
            beam = BeamSettings(
                size=args.beam_size, lm=str(lm), prune_frames=prune, cache_dir=tmp, **biased
            )
            search = make_search(decoding, tokenizer, beam)
            cost = {
                s: chunk_cost_ms(
                    search, log_probs, frames, args.chunk_frames, partials, args.chunks
                )
                for s, frames in at.items()
            }
            print(
                f"{decoding:16s} {'yes' if partials else 'no':8s} {prune or '-':>5} "
                f"{cost[5]:8.3f} {cost[60]:8.3f} {cost[60] / cost[5]:5.2f}"
            )


if __name__ == "__main__":
    main()
