"""A training step reads no tensor value on the host (each read would make a GPU step wait),
except the bad-batch counts every ``bad_batches_read_every`` steps; and a non-finite loss on one
DDP rank stops every rank together, with the same one-line error, instead of leaving the others in
an all-reduce."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from asr_kd.training import builders
from asr_kd.training.bad_batches import BadBatches, zero_gradients_if
from asr_kd.training.run import train
from tests.helpers.host_reads import count_host_reads
from tests.helpers.tiny_runs import TINY_RUN, tiny_run


def _line(function, text: str) -> str:
    """``asr_kd/...py:N`` of the first line of ``function`` that holds ``text``."""
    lines, start = inspect.getsourcelines(function)
    path = inspect.getsourcefile(function).replace("\\", "/").rsplit("/asr_kd/", 1)[1]
    return f"asr_kd/{path}:{start + next(i for i, line in enumerate(lines) if text in line)}"


# Reads that only a CPU step makes: each site asks for the tensor's device first and, on any
# other device, reads nothing (a host read of a CPU tensor waits for nothing); and reads of
# tensors that stay on the CPU in a GPU run.
CPU_ONLY = {
    "asr_kd/models/conformer.py",  # is the batch padded? (an accelerator builds the masks anyway);
    # the dynamic-chunk draw (a CPU RNG tensor)
    "asr_kd/distill/output.py",  # teacher vs student frames (a device flag on an accelerator)
    "torch/optim/optimizer.py",  # AdamW's step counts (torch keeps them on the CPU for this)
    _line(zero_gradients_if, "bool(flag)"),  # a bad step? (a fill under the flag elsewhere)
}
GPU_LIKE = ("data.num_workers=1", "trainer.log_every_n_steps=50")


def reads_per_step(monkeypatch, run, cfg) -> list[Counter]:
    """Host-read sites of each training step of ``run(cfg)``, less the CPU-only ones."""
    real = builders.build_trainer
    with count_host_reads() as reads:
        monkeypatch.setattr(
            builders,
            "build_trainer",
            lambda cfg, out, callbacks=(): real(cfg, out, [*callbacks, reads.callback]),
        )
        run(cfg)
    strip = lambda c: Counter(  # noqa: E731
        {s: n for s, n in c.items() if s not in CPU_ONLY and s.split(":")[0] not in CPU_ONLY}
    )
    return [strip(step) for step in reads.per_step]


def test_a_training_step_reads_nothing_on_the_host_but_every_nth(
    monkeypatch, tmp_path, prepared_data_dir
):
    cfg = tiny_run(
        "train", prepared_data_dir, tmp_path / "t", *GPU_LIKE, "bad_batches_read_every=3", steps=6
    )
    steps = reads_per_step(monkeypatch, train, cfg)
    assert len(steps) == 6
    # the last step also ends the run (Lightning reads its logged values once): not compared.
    # Steps 1, 2, 4, 5: none; step 3 (global_step 3 after it): the one read of the counts
    assert [sum(c.values()) for c in steps[:5]] == [0, 0, 1, 0, 0], steps
    assert list(steps[2]) == [_line(BadBatches.check, ".tolist()")]


_ONE_BAD_RANK = """
import os, sys
from asr_kd.config import compose
from asr_kd.training.run import train
from asr_kd.training.task import AsrTask

real = AsrTask.compute_loss
def nan_on_rank_1(self, log_probs, *args):
    losses = real(self, log_probs, *args)
    if self.training and self.global_rank == 1:
        return losses._replace(loss=losses.loss * float("nan"))
    return losses
AsrTask.compute_loss = nan_on_rank_1
try:
    train(compose("train", sys.argv[1:]))
except RuntimeError as err:
    # one write per line: both ranks share the pipe (a write under PIPE_BUF is not interleaved)
    os.write(2, f"rank {os.environ.get('LOCAL_RANK', '0')} error: {err}\\n".encode())
    sys.exit(3)
"""


def test_bad_batches_on_one_ddp_rank_stop_both_ranks_together(tmp_path, prepared_data_dir):
    script = tmp_path / "one_bad_rank.py"
    script.write_text(textwrap.dedent(_ONE_BAD_RANK))
    overrides = [
        f"data.dir={prepared_data_dir}", f"out_dir={tmp_path / 'ddp'}", "trainer=ddp_cpu",
        "trainer.max_steps=8", "trainer.val_check_interval=8", "checkpoint.every_n_steps=8",
        "max_consecutive_bad_batches=3", "bad_batches_read_every=2", *TINY_RUN,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), *overrides],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    errors = sorted(line for line in proc.stderr.splitlines() if " error: " in line)
    assert proc.returncode == 3, proc.stderr[-3000:]
    # rank 1's losses are NaN from step 0: the run of 3 is reached at step 2, read at step 4
    expected = (
        r"error: 3 consecutive batches with a non-finite loss on some rank \(last on this rank: "
        r"{}\) at step 2; expected at most max_consecutive_bad_batches=2\. Lower optim\.lr"
    )
    assert len(errors) == 2, proc.stderr[-3000:]
    assert re.match("rank 0 " + expected.format("none here"), errors[0]), errors
    assert re.match("rank 1 " + expected.format(r"loss=nan, ctc=[\d.]+, kd=0\.0"), errors[1])


@pytest.mark.parametrize("read_every", [1, 4])
def test_a_single_process_run_of_bad_batches_stops_at_the_next_read(
    monkeypatch, tmp_path, prepared_data_dir, read_every
):
    from asr_kd.distill.losses import DistillLoss
    from asr_kd.training.task import AsrTask

    seen = []

    def nan_loss(self, log_probs, *args):
        seen.append(self.global_step)
        nan = log_probs.sum() * float("nan")
        return DistillLoss(nan, nan.detach(), nan.detach())

    monkeypatch.setattr(AsrTask, "compute_loss", nan_loss)
    cfg = tiny_run(
        "train", prepared_data_dir, tmp_path / f"r{read_every}", "max_consecutive_bad_batches=3",
        f"bad_batches_read_every={read_every}", steps=8,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"^3 consecutive batches .* at step 2;"):
        train(cfg)
    assert len(seen) == (3 if read_every == 1 else 4)  # stops at the first read after step 3


@pytest.mark.parametrize("read_is_free", [False, True])  # an accelerator's fill / the CPU's branch
def test_a_bad_steps_gradients_become_zero_nan_included(read_is_free):
    import torch

    grads = [torch.tensor([1.0, float("nan"), float("inf")]), torch.ones(2, 2)]
    zero_gradients_if(grads, torch.tensor(False), read_is_free)
    assert torch.equal(grads[1], torch.ones(2, 2)) and grads[0][0] == 1.0
    zero_gradients_if(grads, torch.tensor(True), read_is_free)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
