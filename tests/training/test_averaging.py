"""Checkpoint averaging (``average.last_n``): the math, averaged.ckpt, resume, the options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asr_kd.config import compose
from asr_kd.data.datamodule import AsrDataModule
from asr_kd.errors import ConfigError
from asr_kd.evaluation.run import evaluate
from asr_kd.inference.timing import utterances
from asr_kd.metrics import error_rates
from asr_kd.models.decode import greedy_ctc
from asr_kd.models.loading import LoadedModel, load_model
from asr_kd.training.averaging import WeightAverager, averaged_names
from asr_kd.training.run import train
from asr_kd.training.task import AsrTask
from tests.helpers.tiny_runs import tiny_run


class _Tiny(nn.Module):
    """A linear layer, a BatchNorm and a CMVN-like buffer."""

    def __init__(self):
        super().__init__()
        self.linear, self.norm = nn.Linear(2, 3), nn.BatchNorm1d(3)
        self.register_buffer("cmvn_mean", torch.zeros(2))

    def set_all(self, value: float) -> None:
        """Every parameter and buffer to ``value`` (running_var to 2 x value)."""
        with torch.no_grad():
            for tensor in [*self.parameters(), self.norm.running_mean, self.cmvn_mean]:
                tensor.fill_(value)
            self.norm.running_var.fill_(2 * value)
            self.norm.num_batches_tracked.fill_(int(value))


def test_the_average_is_the_mean_of_the_snapshot_steps_and_buffers_come_from_the_last():
    model, averager = _Tiny(), WeightAverager(last_n=3, every_n_steps=2, max_steps=10)
    assert averager.snapshot_steps == [6, 8, 10]
    for step in range(1, 11):
        model.set_all(float(step))
        averager.add(model, step)
    model.set_all(100.0)
    averager.add(model, 10)  # a second batch ending at step 10 (gradient accumulation)
    assert averager.steps == [6, 8, 10] and averager.complete
    model.set_all(10.0)
    state = averager.averaged_state(model)
    for name in ("linear.weight", "linear.bias", "norm.weight", "norm.bias", "norm.running_mean"):
        assert torch.equal(state[name], torch.full_like(state[name], 8.0)), name  # (6+8+10)/3
    assert torch.equal(state["norm.running_var"], torch.full((3,), 16.0))
    assert torch.equal(state["cmvn_mean"], torch.full((2,), 10.0))  # copied, not averaged
    assert int(state["norm.num_batches_tracked"]) == 10
    assert state["linear.weight"].dtype == torch.float32
    assert set(averaged_names(model)) == set(state) - {"cmvn_mean", "norm.num_batches_tracked"}


@pytest.mark.parametrize(
    ("last_n", "every", "steps", "match"),
    [
        (
            5,
            2,
            9,
            r"^average\.last_n=5 x average\.every_n_steps=2 = 10 steps > trainer\.max_steps=9",
        ),
        (-1, 2, 9, r"^average\.last_n=-1, average\.every_n_steps=2: expected last_n >= 1"),
        (2, 0, 9, r"^average\.last_n=2, average\.every_n_steps=0: expected"),
    ],
)
def test_impossible_averaging_options_are_refused_before_any_output(
    tmp_path, prepared_data_dir, last_n, every, steps, match
):
    overrides = (f"average.last_n={last_n}", f"average.every_n_steps={every}")
    with pytest.raises(ConfigError, match=match):
        train(tiny_run("train", prepared_data_dir, tmp_path / "run", *overrides, steps=steps))
    assert not (tmp_path / "run").exists()


def _record_weights(monkeypatch) -> dict[int, dict[str, torch.Tensor]]:
    """global step -> the model's state after that step's update, for every step trained."""
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def record(self, outputs, batch, batch_idx):
        seen[int(self.global_step)] = {k: v.clone() for k, v in self.model.state_dict().items()}

    monkeypatch.setattr(AsrTask, "on_train_batch_end", record, raising=False)
    return seen


_SCORES = ("wer", "cer", "sub", "del", "ins", "ref_words")


@torch.inference_mode()
def _greedy_texts(loaded: LoadedModel, data_dir, subset: str) -> dict[str, tuple[str, str]]:
    """cut id -> (reference, greedy text of ``loaded``), one utterance at a time in torch."""
    dm = AsrDataModule(data_dir, num_workers=0)
    texts = {}
    for utt in utterances(dm.dataloader(subset, shuffle=False)):
        log_probs, lens = loaded.model(utt.feats[None], torch.tensor([utt.feats.shape[0]]))
        [ids] = greedy_ctc(log_probs, lens, blank_id=loaded.tokenizer.blank_id)
        texts[utt.cut_id] = (utt.text, loaded.tokenizer.decode(ids))
    return texts


def test_averaged_checkpoint_holds_the_mean_weights_and_decodes(
    monkeypatch, tmp_path, prepared_data_dir
):
    seen = _record_weights(monkeypatch)
    out = tmp_path / "run"
    overrides = ("average.last_n=3", "average.every_n_steps=2")
    result = train(tiny_run("train", prepared_data_dir, out, *overrides, steps=6))
    path = out / "checkpoints" / "averaged.ckpt"
    assert result["averaged_ckpt"] == str(path) and result["averaged_steps"] == [2, 4, 6]
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["asr_kd"]["averaged_steps"] == [2, 4, 6]
    assert "optimizer_states" not in ckpt
    loaded = load_model(path)
    state = loaded.model.state_dict()
    names = averaged_names(loaded.model)
    assert any("running_var" in n for n in names)  # the tiny teacher has BatchNorm
    for name, value in state.items():
        if name in names:
            mean = sum(seen[s][name].double() for s in (2, 4, 6)) / 3
            assert torch.allclose(value.double(), mean, atol=1e-6), name
        else:
            assert torch.equal(value, seen[6][name]), name
    # last.ckpt stays the final step's weights, not the average
    last = load_model(out / "checkpoints" / "last.ckpt").model.state_dict()
    assert all(torch.equal(last[n], seen[6][n]) for n in state)
    assert not torch.equal(last["ctc.weight"], state["ctc.weight"])
    cfg = compose(
        "evaluate",
        [f"data.dir={prepared_data_dir}", f"out_dir={tmp_path / 'eval'}", "subsets=[test]",
         "chunk_sizes_ms=[]", "rtf.warmup_utts=1", f"+ckpt.averaged={path}", "plots=false"],
    )  # fmt: skip
    rows = evaluate(cfg)["rows"]
    assert [(r["model"], r["mode"]) for r in rows] == [("averaged", "full")]
    # the row scores the averaged weights' own greedy text (ONNX Runtime runs them, torch here)
    ours = _greedy_texts(loaded, prepared_data_dir, "test")
    tsv = (tmp_path / "eval" / "hyps" / "averaged.test.full.tsv").read_text().splitlines()[1:]
    assert {cut_id: (ref, hyp) for cut_id, ref, hyp in (t.split("\t") for t in tsv)} == ours
    rates = error_rates(*zip(*ours.values(), strict=True))
    assert {k: rows[0][k] for k in _SCORES} == {k: rates[k] for k in _SCORES}


def test_no_averaged_checkpoint_without_the_option(tmp_path, prepared_data_dir):
    result = train(tiny_run("train", prepared_data_dir, tmp_path / "run", steps=2))
    assert result["averaged_ckpt"] is None
    assert not (tmp_path / "run" / "checkpoints" / "averaged.ckpt").exists()


def test_a_resumed_run_averages_the_same_weights_as_an_uninterrupted_one(
    monkeypatch, tmp_path, prepared_data_dir
):
    """Killed after step 4 with last.ckpt at step 3 (holding the snapshot of step 2), then
    resumed: averaged.ckpt equals the uninterrupted run's (no dropout or SpecAugment, whose
    random draws Lightning does not restore)."""
    overrides = (
        "average.last_n=3",
        "average.every_n_steps=2",
        "checkpoint.every_n_steps=3",
        "model.dropout=0",
        "spec_augment=null",
    )
    whole = train(tiny_run("train", prepared_data_dir, tmp_path / "whole", *overrides, steps=6))
    real = AsrTask.training_step

    def killed_after_step_4(self, batch, batch_idx):
        if self.global_step == 4:
            raise RuntimeError("killed")
        return real(self, batch, batch_idx)

    monkeypatch.setattr(AsrTask, "training_step", killed_after_step_4)
    cut = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="killed"):
        train(tiny_run("train", prepared_data_dir, cut, *overrides, steps=6))
    saved = torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    monkeypatch.setattr(AsrTask, "training_step", real)
    resumed = train(tiny_run("train", prepared_data_dir, cut, *overrides, "resume=true", steps=6))
    assert resumed["averaged_steps"] == whole["averaged_steps"] == [2, 4, 6]
    a = load_model(whole["averaged_ckpt"]).model.state_dict()
    b = load_model(resumed["averaged_ckpt"]).model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].double(), b[name].double(), atol=1e-6), name
