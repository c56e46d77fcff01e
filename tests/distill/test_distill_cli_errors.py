"""asr-kd-distill refusals through the console entry: one ``error:`` line, status 2, no run
directory left that holds only Hydra's files."""

from __future__ import annotations

import shutil
import subprocess

import torch

from tests.helpers.console import one_error_line, only_hydra_leftovers, run_console
from tests.helpers.tiny_runs import TINY_RUN


def test_a_teacher_of_another_vocabulary_is_one_line(tmp_path, prepared_data_dir, teacher_ckpt):
    from asr_kd.checkpoint import atomic_torch_save
    from asr_kd.data.tokenizer import Tokenizer

    ckpt = torch.load(teacher_ckpt, weights_only=True)
    symbols = ckpt["asr_kd"]["tokenizer"]["symbols"]
    ckpt["asr_kd"]["tokenizer"] = Tokenizer("char", symbols[:-1]).to_dict()  # no "Z"
    foreign = tmp_path / "foreign.ckpt"
    atomic_torch_save(ckpt, foreign)
    run = tmp_path / "run"
    proc = run_console(
        "distill", f"teacher_ckpt={foreign}", "distill.source=online", f"data.dir={prepared_data_dir}",
        f"out_dir={run}", cwd=tmp_path,
    )  # fmt: skip
    one_error_line(proc, "teacher vocab 28 != student vocab 29", str(foreign))
    assert not run.exists()


def test_a_truncated_soft_target_shard_is_one_line(
    tmp_path, prepared_data_dir, teacher_ckpt, targets_dir
):
    store = tmp_path / "targets"
    shutil.copytree(targets_dir, store)
    shard = store / "shard_00000.probs.npy"
    subprocess.run(
        f"head -c 100 {shard} > {shard}.cut && mv {shard}.cut {shard}", shell=True, check=True
    )
    run = tmp_path / "run"
    proc = run_console(
        "distill", f"teacher_ckpt={teacher_ckpt}", f"targets_dir={store}", "distill.source=cached",
        "distill.k=4", "distill.temperature=2.0", f"data.dir={prepared_data_dir}", f"out_dir={run}",
        *TINY_RUN, "trainer.max_steps=2", cwd=tmp_path,
    )  # fmt: skip
    one_error_line(proc, shard.name)
    assert not only_hydra_leftovers(run)
