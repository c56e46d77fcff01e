"""python -m asr_kd.cli.gpu_check (recipes/gpu_check.sh): the one-command GPU check, run here in
its CPU-shrunk form; and how it reads the commands' figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr_kd.cli.gpu_check import dump_figures, main, table, training_figures

ROOT = Path(__file__).resolve().parents[2]


def test_step_time_is_the_fit_time_over_the_steps_a_training_prints():
    text = "`Trainer.fit` stopped\n{'global_step': 4, 'epochs': 1, 'fit_seconds': 2.0, 'x': None}"
    assert training_figures(text) == {"steps": 4, "step_ms": 500.0}
    assert training_figures("no summary: the run died") == {}


def test_two_rank_dump_throughput_is_all_audio_over_the_slowest_rank():
    text = (
        "[INFO] dump train: 30.0 s of audio in 2.0 s (15.0 audio-s/s)\n"
        "[INFO] dump train: 50.0 s of audio in 5.0 s (10.0 audio-s/s)\n"
    )
    assert dump_figures(text) == {"audio_s": 80.0, "audio_s_per_s": 16.0}


def test_an_existing_work_directory_is_refused_in_one_line(tmp_path, capsys):
    assert main(["--cpu-tiny", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} exists")


@pytest.mark.slow
def test_the_cpu_tiny_check_runs_every_step_and_prints_one_table(tmp_path):
    """The whole check on tiny models (~2.5 min on 2 shared cores)."""
    out = tmp_path / "check"
    proc = subprocess.run(
        ["bash", str(ROOT / "recipes" / "gpu_check.sh"), "--cpu-tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in figures["steps"]}
    assert list(steps) == [
        "synth", "prepare", "teacher", "dump-1", "dump-2", "online", "cached", "evaluate",
    ]  # fmt: skip
    for name in ("teacher", "online", "cached"):
        assert steps[name]["figures"]["steps"] == 3 and steps[name]["figures"]["step_ms"] > 0
    for name in ("dump-1", "dump-2", "evaluate"):
        assert steps[name]["figures"]["audio_s_per_s"] > 0
    assert steps["dump-1"]["figures"]["audio_s"] == steps["dump-2"]["figures"]["audio_s"]
    two = steps["dump-2"]["figures"]
    assert two["same_cuts"] and two["cuts"] > 0 and two["cuts_with_other_ids"] == 0
    assert all(s["peak_mem_mib"] > 0 for s in steps.values())
    assert table(figures) in proc.stdout
    assert (out / "evaluate" / "results.json").is_file()
