"""The GPU check: the whole GPU path of asr_kd in one command, with the figures a GPU owner wants.

On a small synthetic corpus (``asr-kd-synth``, then ``asr-kd-prepare``) it runs the real console
scripts with the shipped configs, one after another:

    teacher     asr-kd-train model=teacher_large trainer=gpu (bf16-mixed), a few hundred steps
    dump-1      asr-kd-dump-targets device=cuda bf16=true (one process)
    dump-2      the same with world_size=2 rank=0 and rank=1 side by side (one store)
    online      asr-kd-distill model=student_small distill.source=online (the teacher every step)
    cached      asr-kd-distill model=student_small distill.source=cached (dump-1's store)
    evaluate    asr-kd-evaluate device=cuda (teacher and cached student on the test subset)

and prints one table (and writes ``<out>/gpu_check.json``): wall time of each step, training
step time (the fit's wall time over its steps: loader start-up and the final validation
included, so a lower bound on speed), peak memory, the dumps' throughput (audio seconds per
second, from the dump's own log line; two processes: all ranks' audio over the slowest rank's
time) and evaluate's (test audio seconds per wall second of the whole command, RTF sample
included). Peak memory is the device's used memory polled with ``nvidia-smi`` every 0.2 s (every
process on the GPU, CUDA contexts included) on a GPU, the child process's peak RSS on the CPU.
The two dumps' stores are compared: the same cuts, the same top-k ids on each.

``--cpu-tiny`` shrinks it to run on the CPU in about a minute: tiny models (one layer, width
32), a few steps, 2 minutes of audio, ``device=cpu``, ``trainer=cpu`` (fp32); the table is the
same. A tested command, not a benchmark of this machine.

Usage:
    bash recipes/gpu_check.sh                     # one GPU, ~0.3 h of synthetic audio
    bash recipes/gpu_check.sh --teacher-steps 500 --out exp/gpu_check
    python -m asr_kd.cli.gpu_check --cpu-tiny --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["main"]

TINY_MODEL = [
    "model.d_model=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.ff_dim=64",
    "model.subsampling_channels=8",
]


@dataclass
class Plan:
    """What one check runs: sizes, precision, device and the overrides every training gets."""

    device: str
    hours: dict[str, float]
    teacher_steps: int
    student_steps: int
    trainer: list[str]  # trainer=... and what goes with it, for every training
    teacher_model: list[str]
    student_model: list[str]
    bf16: bool
    evaluate: list[str] = field(default_factory=list)


def gpu_plan(teacher_steps: int, student_steps: int) -> Plan:
    """The real sizes: teacher_large and student_small, trainer=gpu (bf16-mixed)."""
    # 300 s batches of 0.3 h: a few batches per epoch (the loader's workers persist across
    # epochs); trainer=gpu's 800 s would make one
    trainer = ["trainer=gpu", "data.max_duration=300", f"checkpoint.every_n_steps={teacher_steps}"]
    return Plan(
        device="cuda",
        hours={"train": 0.3, "dev": 0.02, "test": 0.05},
        teacher_steps=teacher_steps,
        student_steps=student_steps,
        trainer=trainer,
        teacher_model=["model=teacher_large"],
        student_model=["model=student_small"],
        bf16=True,
        evaluate=["rtf.max_utts=20", "runtime=torch"],
    )


def cpu_tiny_plan() -> Plan:
    """The same commands shrunk for a CPU: tiny models, few steps, fp32."""
    trainer = [
        "trainer=cpu",
        "data.num_workers=0",
        "data.num_buckets=2",
        "data.max_duration=10",
        "trainer.enable_progress_bar=false",
        "trainer.limit_val_batches=1",
        "checkpoint.every_n_steps=3",
    ]
    return Plan(
        device="cpu",
        hours={"train": 0.02, "dev": 0.005, "test": 0.005},
        teacher_steps=3,
        student_steps=3,
        trainer=trainer,
        teacher_model=["model=teacher_small", *TINY_MODEL],
        student_model=["model=student_tiny", *TINY_MODEL],
        bf16=False,
        evaluate=["rtf.max_utts=2", "rtf.warmup_utts=0", "runtime=torch"],
    )


class _GpuMemory:
    """Peak used memory of GPU 0 (MiB) while running, polled with ``nvidia-smi``."""

    def __init__(self):
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        query = [
            "nvidia-smi",
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            "-i",
            "0",
        ]
        while not self._stop.is_set():
            out = subprocess.run(query, capture_output=True, text=True, check=False).stdout
            if out.strip():
                used = float(out.split()[0])
                self.peak_mib = used if self.peak_mib is None else max(self.peak_mib, used)
            self._stop.wait(0.2)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass
class StepResult:
    name: str
    command: str
    wall_s: float
    peak_mem_mib: float | None = None
    figures: dict = field(default_factory=dict)


class CheckFailed(RuntimeError):
    """A command of the check exited non-zero (its log is named)."""


def _run(name: str, argvs: list[list[str]], log_dir: Path, gpu: bool) -> tuple[StepResult, str]:
    """Run ``argvs`` side by side (one process each); their output goes to ``<log_dir>/<name>*.log``.
    Returns the timing and peak memory, and their logs' text together."""
    logs = [log_dir / f"{name}{'' if len(argvs) == 1 else f'.{i}'}.log" for i in range(len(argvs))]
    start, peak_rss = time.perf_counter(), 0.0
    with _GpuMemory() as memory:
        procs = []
        for argv, log in zip(argvs, logs, strict=True):
            with log.open("w") as out:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        statuses = []
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            statuses.append(proc.returncode)
            peak_rss = max(peak_rss, usage.ru_maxrss / 1024)  # KiB on Linux -> MiB
    wall = time.perf_counter() - start
    for status, log in zip(statuses, logs, strict=True):
        if status != 0:
            tail = log.read_text()[-2000:]
            raise CheckFailed(f"step {name} failed (exit {status}); its log {log}:\n{tail}")
    text = "\n".join(log.read_text() for log in logs)
    command = " & ".join(" ".join(a) for a in argvs)
    peak = memory.peak_mib if gpu else peak_rss
    return StepResult(name, command, round(wall, 2), None if peak is None else round(peak)), text


def _audio_seconds(data_dir: Path, subset: str) -> float:
    from lhotse import load_manifest_lazy

    from asr_kd.data.layout import DataDir

    return float(sum(c.duration for c in load_manifest_lazy(DataDir(data_dir).cuts(subset))))


_FIT = re.compile(r"'global_step': (\d+).*'fit_seconds': ([0-9.]+)")
_DUMP = re.compile(r"dump \S+: ([0-9.]+) s of audio in ([0-9.]+) s")


def training_figures(text: str) -> dict:
    """Steps and step time from a training command's printed summary."""
    match = _FIT.search(text)
    if match is None:
        return {}
    steps, seconds = int(match.group(1)), float(match.group(2))
    return {"steps": steps, "step_ms": round(1000 * seconds / max(steps, 1), 1)}


def dump_figures(text: str) -> dict:
    """Audio seconds per second of a dump from its ranks' log lines: all their audio over the
    slowest rank's time."""
    runs = [(float(a), float(s)) for a, s in _DUMP.findall(text)]
    if not runs:
        return {}
    audio, seconds = sum(a for a, _ in runs), max(s for _, s in runs)
    return {"audio_s": round(audio, 1), "audio_s_per_s": round(audio / max(seconds, 1e-9), 1)}


def compare_stores(one: Path, two: Path) -> dict:
    """The cuts of two stores and how many have other top-k ids."""
    from asr_kd.distill.store import SoftTargetStore
    from asr_kd.distill.store.integrity import read_index

    a, b = SoftTargetStore(one), SoftTargetStore(two)
    cuts = sorted(read_index(one)["cuts"])
    same_cuts = cuts == sorted(read_index(two)["cuts"])
    differ = 0
    if same_cuts:
        for start in range(0, len(cuts), 64):
            batch = cuts[start : start + 64]
            x, y = a.decode_batch(batch, None), b.decode_batch(batch, None)
            differ += int(((x.ids != y.ids).flatten(1).any(1)).sum())
    return {"cuts": len(cuts), "same_cuts": same_cuts, "cuts_with_other_ids": differ}


def _cli(name: str) -> list[str]:
    """A console script beside this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).parent / name
    return [str(local) if local.exists() else name]


def run_check(plan: Plan, out: Path) -> dict:
    """Run every step of ``plan`` under ``out``; the figures (also in ``out/gpu_check.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    logs, gpu = out / "logs", plan.device == "cuda"
    logs.mkdir(exist_ok=True)
    corpus, data = out / "corpus", out / "data"
    hours = [f"hours.{k}={v}" for k, v in plan.hours.items()]
    steps: list[StepResult] = []

    def step(name: str, *argvs: list[str]) -> str:
        result, text = _run(name, list(argvs), logs, gpu)
        steps.append(result)
        print(f"[gpu_check] {name}: {result.wall_s:.1f} s", flush=True)
        return text

    step("synth", [*_cli("asr-kd-synth"), f"out_dir={corpus}", "seed=0", *hours])
    step(
        "prepare",
        [*_cli("asr-kd-prepare"), f"corpus_dir={corpus / 'LibriSpeech'}",
         "subsets=[train,dev,test]", f"out_dir={data}", "tokenizer=char"],
    )  # fmt: skip
    teacher = out / "teacher" / "checkpoints" / "last.ckpt"
    common = [f"data.dir={data}", *plan.trainer]

    def train(cmd: str, name: str, steps_: int, *extra: str) -> None:
        text = step(
            name,
            [*_cli(cmd), *common, f"out_dir={out / name}", f"trainer.max_steps={steps_}",
             f"trainer.val_check_interval={steps_}", f"optim.warmup_steps={max(1, steps_ // 10)}",
             *extra],
        )  # fmt: skip
        steps[-1].figures = training_figures(text)

    train("asr-kd-train", "teacher", plan.teacher_steps, *plan.teacher_model)
    dump = [*_cli("asr-kd-dump-targets"), f"teacher_ckpt={teacher}", f"data.dir={data}",
            "subsets=train", "k=8", f"device={plan.device}", f"bf16={str(plan.bf16).lower()}"]  # fmt: skip
    text = step("dump-1", [*dump, f"out_dir={out / 'targets-1'}"])
    steps[-1].figures = dump_figures(text)
    two = [[*dump, f"out_dir={out / 'targets-2'}", "world_size=2", f"rank={r}"] for r in (0, 1)]
    text = step("dump-2", *two)
    steps[-1].figures = {
        **dump_figures(text),
        **compare_stores(out / "targets-1", out / "targets-2"),
    }
    student = [*plan.student_model, f"teacher_ckpt={teacher}", "distill=frame_kl"]
    train("asr-kd-distill", "online", plan.student_steps, *student, "distill.source=online")
    train(
        "asr-kd-distill", "cached", plan.student_steps, *student, "distill.source=cached",
        f"targets_dir={out / 'targets-1'}",
    )  # fmt: skip
    step(
        "evaluate",
        [*_cli("asr-kd-evaluate"), f"data.dir={data}", f"out_dir={out / 'evaluate'}",
         "subsets=[test]", "chunk_sizes_ms=[320]", "plots=false", f"device={plan.device}",
         f"ckpt.teacher={teacher}",
         f"ckpt.student_kd={out / 'cached' / 'checkpoints' / 'last.ckpt'}", *plan.evaluate],
    )  # fmt: skip
    test_audio = _audio_seconds(data, "test")
    steps[-1].figures = {
        "audio_s": round(test_audio, 1),
        "audio_s_per_s": round(test_audio / steps[-1].wall_s, 2),
    }
    figures = {
        "device": _device_name(gpu),
        "plan": asdict(plan),
        "steps": [asdict(s) for s in steps],
    }
    (out / "gpu_check.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def _device_name(gpu: bool) -> str:
    import platform

    if gpu:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def table(figures: dict) -> str:
    """The figures as a Markdown table, one row per step."""
    memory = "peak GPU MiB" if figures["plan"]["device"] == "cuda" else "peak RSS MiB"
    lines = [
        f"GPU check on {figures['device']}",
        f"| step | wall s | {memory} | step ms | audio-s/s | notes |",
        "|---|---|---|---|---|---|",
    ]
    for s in figures["steps"]:
        f = s["figures"]
        notes = ", ".join(f"{k}={v}" for k, v in f.items() if k not in ("step_ms", "audio_s_per_s"))
        lines.append(
            f"| {s['name']} | {s['wall_s']} | {s['peak_mem_mib'] or '-'} | "
            f"{f.get('step_ms', '-')} | {f.get('audio_s_per_s', '-')} | {notes} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asr_kd.cli.gpu_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default="exp/gpu_check", help="work directory (must not exist)")
    parser.add_argument("--cpu-tiny", action="store_true", help="tiny models on the CPU (~1 min)")
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--student-steps", type=int, default=200)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; expected a new directory (--out)", file=sys.stderr)
        return 2
    if not args.cpu_tiny:
        import torch

        if not torch.cuda.is_available():
            print(
                "error: no CUDA device visible to torch; run with --cpu-tiny on a CPU",
                file=sys.stderr,
            )
            return 2
    plan = cpu_tiny_plan() if args.cpu_tiny else gpu_plan(args.teacher_steps, args.student_steps)
    try:
        figures = run_check(plan, out)
    except CheckFailed as failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    print(table(figures))
    print(f"figures: {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
