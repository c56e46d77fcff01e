"""asr_kd/training/launch.py: ranks and world sizes under a launcher, and a real 2-node torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asr_kd.errors import ConfigError
from asr_kd.training.launch import check_launch, is_global_zero, launcher_world_size
from tests.helpers.net import free_port
from tests.helpers.tiny_runs import TINY_RUN

_LAUNCH_ENV = ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK",
               "GROUP_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NAME",
               "SLURM_NTASKS_PER_NODE", "SLURM_NNODES")  # fmt: skip


@pytest.fixture
def no_launcher(monkeypatch):
    """An environment without any launcher's variables (the test may then set some)."""
    for name in _LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _torchrun(env, rank: int, world: int) -> None:
    env.setenv("TORCHELASTIC_RUN_ID", "test")
    env.setenv("RANK", str(rank))
    env.setenv("LOCAL_RANK", "0")
    env.setenv("WORLD_SIZE", str(world))


def test_rank_zero_is_read_from_each_launcher(no_launcher):
    assert is_global_zero() and launcher_world_size() is None  # no launcher: the only process
    _torchrun(no_launcher, rank=1, world=2)
    assert not is_global_zero() and launcher_world_size() == 2
    no_launcher.setenv("RANK", "0")
    no_launcher.setenv("NODE_RANK", "1")  # torchrun's RANK decides, not a stray NODE_RANK
    assert is_global_zero()
    for name in _LAUNCH_ENV:
        no_launcher.delenv(name, raising=False)
    no_launcher.setenv("SLURM_NTASKS", "16")
    no_launcher.setenv("SLURM_JOB_NAME", "run.sh")
    no_launcher.setenv("SLURM_PROCID", "9")
    assert not is_global_zero() and launcher_world_size() == 16
    for name in _LAUNCH_ENV:
        no_launcher.delenv(name, raising=False)
    no_launcher.setenv("LOCAL_RANK", "1")  # a DDP process Lightning started itself
    no_launcher.setenv("WORLD_SIZE", "2")
    assert not is_global_zero() and launcher_world_size() == 2


def test_several_nodes_without_a_launcher_are_refused_in_one_line(no_launcher):
    """Regression: README's ``run.sh ... train:trainer.num_nodes=2`` started one node's ranks
    and waited forever for the other node's."""
    with pytest.raises(ConfigError, match=r"^trainer\.num_nodes=2 but no launcher started"):
        check_launch({"accelerator": "cpu", "devices": 1, "num_nodes": 2})
    check_launch({"accelerator": "cpu", "devices": 1, "num_nodes": 1})
    no_launcher.setenv("NODE_RANK", "0")  # Lightning's own multi-node environment, set by hand
    check_launch({"accelerator": "cpu", "devices": 1, "num_nodes": 2})


def test_a_world_size_other_than_nodes_times_devices_is_refused(no_launcher):
    _torchrun(no_launcher, rank=0, world=2)
    check_launch({"accelerator": "cpu", "devices": 1, "num_nodes": 2})
    with pytest.raises(ConfigError, match=r"^the launcher started 2 processes but .* = 1 \* 4 = 4"):
        check_launch({"accelerator": "cpu", "devices": 4, "num_nodes": 1})
    with pytest.raises(ConfigError, match=r"started 2 processes .* = 3 \* auto: set them"):
        check_launch({"accelerator": "cpu", "devices": "auto", "num_nodes": 3})
    check_launch({"accelerator": "cpu", "devices": [0, 1], "num_nodes": 1})


def _start_nodes(out: Path, overrides: list[str], tag: str) -> list[subprocess.Popen]:
    """Two torchrun processes on localhost acting as two nodes of one process each, running
    ``asr-kd-distill`` with ``overrides``; stdout+stderr in ``out.parent/<tag>-node<r>.txt``."""
    torchrun = Path(sys.executable).parent / "torchrun"
    command = Path(sys.executable).parent / "asr-kd-distill"
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for rank in (0, 1):
        launch = [str(torchrun), "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
                  "--master-addr=127.0.0.1", f"--master-port={port}", "--no-python"]  # fmt: skip
        with open(out.parent / f"{tag}-node{rank}.txt", "w") as console:
            procs.append(subprocess.Popen(
                [*launch, str(command), *overrides], stdout=console, stderr=subprocess.STDOUT,
                env=env, cwd=out.parent,             ))  # fmt: skip
    return procs


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    return [proc.wait(timeout=max(deadline - time.monotonic(), 1)) for proc in procs]


def _kill(procs: list[subprocess.Popen]) -> None:
    """SIGKILL every node's worker (torchrun starts each in a session of its own), as a lost
    node would; then each torchrun, which sees its worker die, stops."""
    for proc in procs:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            os.kill(int(pid), signal.SIGKILL)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _step(ckpt: Path) -> int:
    return int(torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"])


@pytest.mark.slow
def test_two_node_torchrun_distills_resumes_after_a_kill_and_writes_one_set_of_files(
    tmp_path, prepared_data_dir, make_checkpoint
):
    if not (Path(sys.executable).parent / "asr-kd-distill").exists():
        pytest.skip(f"console scripts not installed beside {sys.executable}")
    teacher = make_checkpoint(tmp_path / "teacher.ckpt", streaming=False)
    out, steps = tmp_path / "student", 24
    overrides = [
        f"data.dir={prepared_data_dir}", f"out_dir={out}", f"teacher_ckpt={teacher}",
        "distill.source=online", "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
        "checkpoint.every_n_steps=3", *TINY_RUN,
    ]  # fmt: skip
    last = out / "checkpoints" / "last.ckpt"
    procs = _start_nodes(out, overrides, "first")
    while not last.exists() and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    _kill(procs)  # after the first checkpoint: the run is lost mid-way, on both nodes
    assert last.exists(), (tmp_path / "first-node0.txt").read_text()[-3000:]
    killed_at = _step(last)
    assert 3 <= killed_at < steps

    procs = _start_nodes(out, [*overrides, "resume=true"], "resumed")
    codes = _finish(procs, timeout=300)
    consoles = [(tmp_path / f"resumed-node{r}.txt").read_text() for r in (0, 1)]
    assert codes == [0, 0], consoles[0][-3000:] + consoles[1][-3000:]
    assert _step(last) == steps
    # one set of files: rank 0's, no per-rank logs, configs or checkpoints
    assert sorted(p.name for p in out.iterdir()) == [
        ".hydra", "checkpoints", "config.yaml", "distill.log", "logs"
    ]  # fmt: skip
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (out / "logs" / "csv").iterdir()) == ["version_0", "version_1"]
    log = (out / "distill.log").read_text()
    assert log.count(f"asr-kd-distill data.dir={prepared_data_dir}") == 2  # the two starts
    assert log.count(f"`Trainer.fit` stopped: `max_steps={steps}` reached.") == 1
    assert f"'resumed_from': '{last}'" in log
    assert consoles[0].count(f"{{'global_step': {steps}, ") == 1  # reported by rank 0 only
    assert "global_step" not in consoles[1]
    resumed = (out / "logs" / "csv" / "version_1" / "metrics.csv").read_text().splitlines()
    first_step = int(resumed[1].split(",")[resumed[0].split(",").index("step")])
    assert first_step >= killed_at  # the resumed run went on from the checkpoint's step


def test_an_online_teacher_goes_to_the_ranks_gpu_and_takes_the_trainers_half_dtype(
    no_launcher, monkeypatch
):
    from asr_kd.training.launch import precision_dtype, rank_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device({"accelerator": "gpu", "devices": -1}) == torch.device("cuda", 1)
    assert rank_device({"accelerator": "gpu", "devices": [2, 3]}) == torch.device("cuda", 3)
    assert rank_device({"accelerator": "cpu", "devices": 2}) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device({"accelerator": "auto"}) == torch.device("cpu")
    assert precision_dtype("bf16-true") == torch.bfloat16 and precision_dtype(16) == torch.float16
    assert precision_dtype("32-true") is None and precision_dtype("64") is None
