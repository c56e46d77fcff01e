"""Batched forward throughput of a model config on this machine: the figure the evaluation's
extrapolation to LibriSpeech starts from (untrained weights: speed only).

Prints, per context (full, and each chunk size with the chunk-masked forward that
``asr-kd-evaluate`` uses for stream rows' WER), MACs per audio second, audio seconds per wall
second and GMAC/s of ``--batch`` utterances of ``--seconds`` each on ``--threads`` threads.

Usage:
    OMP_NUM_THREADS=1 python tools/batched_throughput.py --model teacher_large \\
        --vocab 500 --threads 1 --batch 8 --seconds 15
    python tools/batched_throughput.py --model student_small --chunk-ms 320 --device cuda
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import hydra.utils
import torch
from omegaconf import OmegaConf

from asr_kd.models.profile import macs_per_audio_second

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="teacher_large", help="a conf/model/ name")
    parser.add_argument("--vocab", type=int, default=500, help="output units (BPE 500)")
    parser.add_argument("--chunk-ms", type=float, nargs="*", default=[], help="stream contexts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="audio per utterance")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{args.model}.yaml"))
    cfg["vocab_size"] = args.vocab
    model = hydra.utils.instantiate(cfg).eval()
    frames = int(args.seconds * 100)
    feats = torch.randn(args.batch, frames, 80, device=args.device)
    lens = torch.full((args.batch,), frames, device=args.device)
    contexts = [None, *(int(ms / 40) for ms in args.chunk_ms)]
    for chunk in contexts:
        macs = macs_per_audio_second(model, chunk, model.resolve_left_chunks(None))
        model.to(args.device)
        extra = (
            {}
            if chunk is None
            else {"chunk_size": chunk, "left_chunks": model.resolve_left_chunks(None)}
        )
        with torch.inference_mode():
            model(feats, lens, **extra)  # warm-up
            start = time.perf_counter()
            for _ in range(args.repeats):
                model(feats, lens, **extra)
            if args.device != "cpu":
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / args.repeats
        model.to("cpu")
        audio_per_s = args.batch * args.seconds / seconds
        name = "full" if chunk is None else f"chunk {chunk * 40} ms"
        print(
            f"{args.model} {name}: {macs / 1e9:.2f} GMAC/audio s, {audio_per_s:.1f} audio s/s, "
            f"{macs * audio_per_s / 1e9:.1f} GMAC/s ({args.threads} threads, batch "
            f"{args.batch} x {args.seconds:g} s, {args.device})"
        )


if __name__ == "__main__":
    main()
