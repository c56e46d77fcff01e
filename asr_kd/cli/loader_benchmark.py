"""Data pipeline throughput: audio seconds per second that one loader worker delivers, per mode.

A loader worker runs :class:`~asr_kd.data.datamodule.AsrDataset` on the cut lists that the
training sampler hands out (the sampler itself runs in the training process). This times exactly
that work, in this process, on one torch thread, over the batches of
:meth:`AsrDataModule.train_sampler`, for:

    precomputed        the prepared features (lilcom reads): cached-target KD, and the speed
                       copies of asr-kd-prepare speed_perturb=[0.9,1.1] (their own features)
    fbank              the same cuts without features: FLAC decode + fbank per cut
    speed_perturb      the same, each cut at speed 0.9, 1.0 or 1.1 (uniformly, as
                       data.speed_perturb draws): + lhotse's resampling for two in three
    data.speed_perturb what data.speed_perturb=true runs: the 1.0 third reads its features

"Audio seconds" are those of the batches (after perturbation: what the model trains on). Each
mode runs ``--passes`` times over the same batches; the median pass is reported (files in the
page cache after the first: a training node reads from local disk or its cache too).

Then the loader workers one GPU needs, for each model: the training throughput of one GPU in
audio seconds per second, estimated as ``mfu * peak_tflops / (6 * MACs per audio second)`` (a
training step ~ 3 forward passes of 2 FLOPs per MAC; MACs from
:func:`asr_kd.models.profile.macs_per_audio_second` at ``--utt-seconds``, full context), over each
mode's per-worker throughput.

Without ``--data-dir`` it writes a small synthetic corpus (asr-kd-synth, utterances about as
long as LibriSpeech's) and prepares it (asr-kd-prepare, one job) in a temporary directory first.

Prints figures; not a test.

Usage:
    python -m asr_kd.cli.loader_benchmark                          # ~0.1 h synthetic corpus
    python -m asr_kd.cli.loader_benchmark --data-dir DATA --subset train --passes 3
    python -m asr_kd.cli.loader_benchmark --mfu 0.3 --peak-tflops 989   # H100 SXM bf16 dense
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import hydra.utils
import torch
from tqdm import tqdm

from asr_kd.config import compose
from asr_kd.data import prepare, synthetic
from asr_kd.data.datamodule import AsrDataModule, AsrDataset
from asr_kd.models.profile import macs_per_audio_second

__all__ = ["main"]

FRAME_SHIFT_S = 0.01  # fbank frames (conf: 10 ms shift)
MODELS = ("teacher_large", "student_small")
SPEED_FACTORS = (0.9, 1.1)  # data.speed_perturb's default (conf/data/default.yaml)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="a prepared data dir")
    parser.add_argument("--subset", default="train")
    parser.add_argument("--hours", type=float, default=0.1, help="of the synthetic corpus")
    parser.add_argument("--max-duration", type=float, default=200.0, help="seconds per batch")
    parser.add_argument("--passes", type=int, default=3, help="per mode; the median is shown")
    parser.add_argument(
        "--mfu", type=float, nargs="+", default=[0.35, 0.1], help="achieved / peak FLOPs"
    )
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM bf16 dense")
    parser.add_argument("--vocab-size", type=int, default=500, help="the recipe's BPE-500")
    parser.add_argument("--utt-seconds", type=float, default=12.3, help="LibriSpeech's mean")
    return parser.parse_args(argv)


def _synthetic_data_dir(root: Path, hours: float) -> Path:
    """A ``hours`` synthetic train subset (16 speakers) of LibriSpeech-long utterances (25-45
    words, about 12 s: per-cut costs weigh as on LibriSpeech), prepared with the char tokenizer."""
    corpus, data = root / "corpus", root / "data"
    sizes = [f"hours.train={hours}", "hours.dev=0", "hours.test=0", "speakers.train=16"]
    sizes.append("words_per_utt=[25,45]")
    sizes.append("text=words")  # any 25-45 words: only 104 shipped training sentences are that long
    synthetic.run(compose("synth", [f"out_dir={corpus}", *sizes]))
    overrides = [f"corpus_dir={corpus / 'LibriSpeech'}", f"out_dir={data}", "subsets=[train]"]
    prepare.run(compose("prepare", [*overrides, "num_jobs=1"]))
    return data


def _without_features(cuts) -> list:
    from lhotse.utils import fastcopy

    return [fastcopy(cut, features=None) for cut in cuts]


def _time_pass(dataset: AsrDataset, batches: list, desc: str) -> tuple[float, float, float]:
    """``(audio seconds, wall seconds, CPU seconds)`` of ``dataset[b]`` over ``batches``."""
    audio = wall = cpu = 0.0
    for cuts in tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        start, start_cpu = time.perf_counter(), time.process_time()
        batch = dataset[cuts]
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        audio += float(batch["feat_lens"].sum()) * FRAME_SHIFT_S
    return audio, wall, cpu


def _modes(dm: AsrDataModule, batches: list) -> dict[str, tuple[AsrDataset, list]]:
    """Each mode's dataset (as the data module builds it) and the cut lists it is given."""
    bare = [_without_features(b) for b in batches]
    return {
        "precomputed": (AsrDataset(dm.tokenizer), batches),
        "fbank": (AsrDataset(dm.tokenizer), bare),
        "speed_perturb": (AsrDataset(dm.tokenizer, speed_factors=SPEED_FACTORS), bare),
        "data.speed_perturb": (AsrDataset(dm.tokenizer, speed_factors=SPEED_FACTORS), batches),
    }


def measure(
    data_dir: Path, subset: str, max_duration: float, passes: int
) -> dict[str, tuple[float, float]]:
    """``{mode: (audio seconds per CPU second, per wall second)}`` of one worker, each the
    median of ``passes`` passes. Per CPU second is what a worker with a core of its own gives;
    wall time also counts the other processes sharing this machine's cores."""
    dm = AsrDataModule(data_dir, train_subset=subset, max_duration=max_duration, num_workers=0)
    batches = list(dm.train_sampler())
    cuts = [c for b in batches for c in b]
    print(
        f"{data_dir} {subset}: {len(cuts)} cuts, {sum(c.duration for c in cuts) / 60:.1f} min of "
        f"audio (mean {statistics.mean(c.duration for c in cuts):.1f} s), {len(batches)} "
        f"batches of <= {max_duration:g} s; {passes} passes per mode, the median shown"
    )
    rates = {}
    for mode, (dataset, given) in _modes(dm, batches).items():
        runs = [_time_pass(dataset, given, f"{mode} pass {i + 1}") for i in range(passes)]
        rates[mode] = (
            statistics.median(audio / cpu for audio, _, cpu in runs),
            statistics.median(audio / wall for audio, wall, _ in runs),
        )
    return rates


def training_macs(model_name: str, args: argparse.Namespace) -> float:
    """MACs per audio second of ``conf/model/<model_name>.yaml`` (full context, untrained)."""
    cfg = compose("train", [f"model={model_name}", "data.dir=unused", "out_dir=unused"]).model
    model = hydra.utils.instantiate(cfg, vocab_size=args.vocab_size)
    return macs_per_audio_second(model, seconds=args.utt_seconds)


def gpu_audio_rate(macs: float, mfu: float, peak_tflops: float) -> float:
    """Audio seconds per second one GPU trains on: ``mfu`` of ``peak_tflops`` over 6 FLOPs per
    MAC (forward 2, backward 4)."""
    return mfu * peak_tflops * 1e12 / (6 * macs)


def _report(rates: dict[str, tuple[float, float]], args: argparse.Namespace) -> None:
    print(f"\n{'audio s / s per worker':22s}{'per CPU s':>12s}{'per wall s':>12s}")
    for mode, (cpu, wall) in rates.items():
        print(f"{mode:22s}{cpu:12.0f}{wall:12.0f}")
    print(
        f"\nloader workers (cores) per GPU, from the per-CPU-second rates, at a share (mfu) of {args.peak_tflops:g} TFLOPS, training = "
        f"6 FLOPs per MAC, MACs at {args.utt_seconds:g} s utterances (full context):"
    )
    print(f"{'model':16s}{'GMACs/audio s':>14s}{'mfu':>6s}{'GPU audio s/s':>15s}" + "".join(
        f"{m:>20s}" for m in rates
    ))  # fmt: skip
    for name in MODELS:
        macs = training_macs(name, args)
        for mfu in args.mfu:
            gpu = gpu_audio_rate(macs, mfu, args.peak_tflops)
            cells = "".join(f"{math.ceil(gpu / cpu):20d}" for cpu, _ in rates.values())
            print(f"{name:16s}{macs / 1e9:14.2f}{mfu:6.2f}{gpu:15,.0f}{cells}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(1)  # one loader worker = one process on one core
    if args.data_dir is not None:
        _report(measure(args.data_dir, args.subset, args.max_duration, args.passes), args)
        return 0
    with tempfile.TemporaryDirectory(prefix="loader_benchmark_") as tmp:
        data = _synthetic_data_dir(Path(tmp), args.hours)
        _report(measure(data, "train", args.max_duration, args.passes), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
