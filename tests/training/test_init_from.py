"""``init_from=CKPT``: a new run from a checkpoint's weights (fine-tuning), not a resume."""

from __future__ import annotations

import pytest
import torch

from asr_kd.errors import ConfigError
from asr_kd.training.run import distill, train
from asr_kd.training.task import AsrTask
from tests.helpers.tiny_runs import tiny_run


@pytest.fixture(scope="module")
def source(tmp_path_factory, prepared_data_dir):
    """A 4-step tiny teacher run: its last.ckpt is what the tests start from."""
    out = tmp_path_factory.mktemp("source")
    return train(tiny_run("train", prepared_data_dir, out, steps=4))["last_ckpt"]


def _weights_at_start(monkeypatch) -> dict[str, torch.Tensor]:
    """Fills with the model's state when training starts (step 0, before any update)."""
    seen: dict[str, torch.Tensor] = {}

    def record(self):
        assert self.global_step == 0
        seen.update({k: v.clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(AsrTask, "on_train_start", record, raising=False)
    return seen


@pytest.mark.parametrize("command", ["train", "distill"])
def test_a_run_starts_from_the_checkpoints_weights_with_a_fresh_optimizer(
    monkeypatch, tmp_path, prepared_data_dir, source, command
):
    seen = _weights_at_start(monkeypatch)
    out = tmp_path / "finetune"
    overrides = [f"init_from={source}"]
    if command == "distill":  # the CTC-only student path of asr-kd-distill, the teacher's model
        overrides += ["distill=none", "model=teacher_small"]
    cfg = tiny_run(command, prepared_data_dir, out, *overrides, steps=2)
    result = (train if command == "train" else distill)(cfg)
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    expected = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items()}
    assert seen.keys() == expected.keys()
    for name, value in expected.items():  # CMVN included
        assert torch.equal(seen[name], value), name
    # not a resume: the step count, AdamW's state and the schedule restart from 0
    assert result["init_from"] == str(source) and result["resumed_from"] is None
    after = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and after["global_step"] == 2 == result["global_step"]
    assert float(after["optimizer_states"][0]["state"][0]["step"]) == 2
    assert after["lr_schedulers"][0]["last_epoch"] == 2


def test_another_model_shape_is_an_error_naming_the_parameter_shapes_and_file(
    tmp_path, prepared_data_dir, source
):
    cfg = tiny_run("train", prepared_data_dir, tmp_path / "run", f"init_from={source}")
    cfg.model.ff_dim = 48
    with pytest.raises(
        ConfigError,
        match=rf"^init_from={source}: parameter layers\.0\.ff1\.1\.bias has shape \(64,\) "
        r"in the checkpoint, \(48,\) in this run's model; expected the same model config "
        r"\(checkpoint vs this run: ff_dim 64 vs 48\): set model\.\* as the checkpoint's",
    ):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_missing_or_unexpected_parameter_is_named(tmp_path, prepared_data_dir, source):
    deeper = tiny_run("train", prepared_data_dir, tmp_path / "a", f"init_from={source}")
    deeper.model.num_layers = 2
    with pytest.raises(
        ConfigError,
        match=r"parameter layers\.1\.\S+ \([\d, ]+\) of this run's model is not in the "
        r"checkpoint; expected the same model config \(checkpoint vs this run: num_layers 1 vs 2\)",
    ):
        train(deeper)
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    ckpt["state_dict"]["model.extra.weight"] = torch.zeros(2, 3)
    torch.save(ckpt, tmp_path / "extra.ckpt")
    with pytest.raises(
        ConfigError,
        match=r"parameter extra\.weight \(2, 3\) of the checkpoint is not in this run's model; "
        r"expected the same model config: set",
    ):
        train(
            tiny_run("train", prepared_data_dir, tmp_path / "b", f"init_from={tmp_path}/extra.ckpt")
        )


def test_another_tokenizer_is_a_one_line_error(tmp_path, prepared_data_dir, source):
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    symbols = ckpt["asr_kd"]["tokenizer"]["symbols"]
    symbols[1], symbols[2] = symbols[2], symbols[1]  # the same vocab size, other ids
    other = tmp_path / "other_tokenizer.ckpt"
    torch.save(ckpt, other)
    with pytest.raises(
        ConfigError, match=rf"^init_from={other}: its tokenizer \(char, vocab "
    ) as e:
        train(tiny_run("train", prepared_data_dir, tmp_path / "run", f"init_from={other}"))
    message = str(e.value)
    assert "\n" not in message and "data prepared with the checkpoint's (tokenizer=char" in message


def test_init_from_with_resume_is_an_error(tmp_path, prepared_data_dir, source):
    out = tmp_path / "run"
    both = (f"init_from={source}", "resume=true")
    match = rf"^init_from={source} with resume=true: a resumed run"
    with pytest.raises(ConfigError, match=match):  # no run to resume yet: still this error
        train(tiny_run("train", prepared_data_dir, out, *both))
    train(tiny_run("train", prepared_data_dir, out, steps=2))
    with pytest.raises(ConfigError, match=match):
        train(tiny_run("train", prepared_data_dir, out, *both))
