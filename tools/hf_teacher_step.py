"""Time an online ``hf:`` teacher's share of a training step on the CPU, one thread: what the
training thread spends per batch with the feature extractor on it (as before: ``model(audio,
audio_lens)``) against the extractor in the loader workers (``model.run(inputs, mask)`` on
inputs a worker made), in float32 and with bfloat16 weights under autocast.

The models are the tests' tiny random ones (tests/helpers/hf_models.py, 32 wide, 2 layers), so
the extractor's share is far larger than at a real size: the figures say what leaves the
training thread, not a GPU speed-up (nothing here ran on a GPU). bfloat16 on a CPU without
native bf16 matmuls (AVX2) is emulated and slower: it is timed to show the path works.

Usage:
    OMP_NUM_THREADS=1 python tools/hf_teacher_step.py            # 8 x 10 s utterances per batch
    OMP_NUM_THREADS=1 python tools/hf_teacher_step.py --utts 16 --seconds 15 --reps 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from asr_kd.models.hf import ExtractorInputs, load_hf
from tests.helpers import hf_models


def _median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utts", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor(
        [int(16000 * args.seconds * (1 - 0.3 * i / args.utts)) for i in range(args.utts)]
    )
    audio = torch.zeros(args.utts, int(lens.max()))
    for b, n in enumerate(lens.tolist()):
        audio[b, :n] = 0.1 * torch.randn(n, generator=g)
    print(f"batch: {args.utts} utterances, {float(lens.sum()) / 16000:.0f} s of audio; one thread")
    print("| family | path | ms per batch |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("wav2vec2_conformer", "parakeet"):
            model_dir = getattr(hf_models, f"make_{family}")(Path(tmp) / family)
            for name, ms in _time_family(model_dir, audio, lens, args.reps).items():
                print(f"| {family} | {name} | {ms:.1f} |")


def _time_family(model_dir: Path, audio: torch.Tensor, lens: torch.Tensor, reps: int) -> dict:
    fp32 = load_hf(f"hf:{model_dir}").model
    bf16 = load_hf(f"hf:{model_dir}", dtype=torch.bfloat16).model
    inputs, mask = fp32.extract(ExtractorInputs.waves(audio, lens))
    rows = {
        "extractor on the training thread, fp32 (before)": lambda: fp32(audio, lens),
        "extractor in the workers, fp32": lambda: fp32.run(inputs, mask),
        "extractor in the workers, bf16 weights": lambda: bf16.run(inputs, mask),
        "the extractor alone (now in a worker)": lambda: fp32.extract(
            ExtractorInputs.waves(audio, lens)
        ),
    }
    with torch.inference_mode():
        return {name: _median_ms(fn, reps) for name, fn in rows.items()}


if __name__ == "__main__":
    main()
