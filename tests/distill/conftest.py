"""Fixtures for the distillation tests: a tiny trained teacher and its dumped soft targets, and
a recorder of the last training step (to recompute a logged loss by hand)."""

from __future__ import annotations

import copy

import pytest
import torch

from asr_kd.config import compose
from tests.helpers.tiny_runs import tiny_run


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory, prepared_data_dir):
    """A tiny full-context teacher trained for 3 steps with asr-kd-train."""
    from asr_kd.training.run import train

    out = tmp_path_factory.mktemp("teacher")
    result = train(tiny_run("train", prepared_data_dir, out, "model=teacher_small"))
    return result["last_ckpt"]


@pytest.fixture(scope="session")
def targets_dir(tmp_path_factory, prepared_data_dir, teacher_ckpt):
    """The teacher's top-4 soft targets at T=2 over the train subset, in several small shards."""
    from asr_kd.distill.dump import dump_targets

    out = tmp_path_factory.mktemp("targets")
    dump_targets(dump_config(prepared_data_dir, teacher_ckpt, out))
    return out


def dump_config(data_dir, teacher_ckpt, out_dir, *overrides: str):
    return compose(
        "dump_targets",
        [
            f"teacher_ckpt={teacher_ckpt}",
            f"data.dir={data_dir}",
            f"out_dir={out_dir}",
            "subsets=train",
            "k=4",
            "temperature=2.0",
            "shard_frames=100",
            "device=cpu",
            *overrides,
        ],
    )


@pytest.fixture
def tiny_config():
    """``tiny_config(config, data_dir, out_dir, *overrides)`` -> composed config of a tiny run."""
    return tiny_run


@pytest.fixture(scope="session")
def dump_targets_config():
    """``dump_targets_config(data_dir, teacher_ckpt, out_dir, *overrides)`` -> composed config."""
    return dump_config


class StepRecorder:
    """The batch and the task's weights (``model``, ``kd_modules`` state dicts) of the latest
    training step of a run made with :attr:`overrides`: no dropout, no SpecAugment, one chunk
    size (full context), so that step's loss depends on nothing else."""

    overrides = ("model.dropout=0", "spec_augment=null", "model.train_chunk_sizes=[null]")

    def __init__(self):
        self.batch: dict = {}
        self.model: dict = {}
        self.kd_modules: dict = {}

    def record(self, task, batch: dict) -> None:
        self.batch = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
        self.model = copy.deepcopy(task.model.state_dict())
        self.kd_modules = copy.deepcopy(task.kd_modules.state_dict())


@pytest.fixture
def last_step(monkeypatch) -> StepRecorder:
    """A :class:`StepRecorder` fed by every ``AsrTask.training_step`` of the test."""
    from asr_kd.training.task import AsrTask

    recorder, real = StepRecorder(), AsrTask.training_step

    def recording(task, batch, batch_idx):
        recorder.record(task, batch)
        return real(task, batch, batch_idx)

    monkeypatch.setattr(AsrTask, "training_step", recording)
    return recorder
