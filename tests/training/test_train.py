"""asr-kd-train: a few steps on a tiny model, checkpoints as data, resume, bad batches, DDP."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest
import torch

from asr_kd.distill.losses import DistillLoss
from asr_kd.errors import ConfigError
from asr_kd.models.loading import load_model
from asr_kd.training.builders import AtomicCheckpointIO
from asr_kd.training.run import train
from asr_kd.training.task import AsrTask
from tests.helpers.tiny_runs import TINY_RUN, tiny_run


def _cfg(data_dir, out_dir, *overrides):
    """4 steps, dev WER and last.ckpt every 2."""
    return tiny_run(
        "train",
        data_dir,
        out_dir,
        "trainer.val_check_interval=2",
        "checkpoint.every_n_steps=2",
        "optim.warmup_steps=2",
        *overrides,
        steps=4,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, prepared_data_dir):
    out = tmp_path_factory.mktemp("train")
    result = train(_cfg(prepared_data_dir, out))
    return out, result


def test_a_few_steps_write_the_run_directory(run_dir):
    out, result = run_dir
    assert result["global_step"] == 4 and result["bad_batches"] == 0
    assert 0 <= result["metrics"]["val/wer"] == pytest.approx(_logged_dev(out)[4])
    assert (out / "config.yaml").is_file()
    assert list((out / "logs" / "csv").glob("version_0/metrics.csv"))
    assert list((out / "logs" / "tensorboard").glob("version_0/events.*"))
    assert not list((out / "checkpoints").glob("*.tmp"))


def _logged_dev(out, key: str = "val/wer") -> dict[int, float]:
    """global step -> ``key`` as logged in the CSV metrics of the run's first version."""
    with open(out / "logs" / "csv" / "version_0" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(key)]
    return {int(r["step"]) + 1: float(r[key]) for r in rows}  # the CSV step counts from 0


def test_best_checkpoint_decodes_the_dev_batch_at_its_logged_wer_and_cer(
    run_dir, prepared_data_dir
):
    """best.ckpt holds the weights of the validation with the lowest val/wer, that WER is
    ``best_wer``, and decoding the dev batch validated (limit_val_batches=1) with a checkpoint
    gives the WER and CER logged at its step (a 4-step model scores WER 100, so the CER is the
    figure that tells a miscounted validation here)."""
    from asr_kd.data.datamodule import build_datamodule
    from asr_kd.metrics import char_error_rate, word_error_rate
    from asr_kd.models.decode import greedy_ctc

    out, result = run_dir
    wers, cers = _logged_dev(out), _logged_dev(out, "val/cer")
    assert sorted(wers) == sorted(cers) == [2, 4]  # val_check_interval=2 over 4 steps
    assert result["best_wer"] == pytest.approx(min(wers.values()))
    assert result["best_ckpt"] == str(out / "checkpoints" / "best.ckpt")
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert wers[best["global_step"]] == pytest.approx(min(wers.values()))
    batch = next(iter(build_datamodule(_cfg(prepared_data_dir, out).data).val_dataloader()))
    # best.ckpt at its step; last.ckpt (written after the last validation) at step 4
    for name, step in (("best.ckpt", best["global_step"]), ("last.ckpt", 4)):
        loaded = load_model(out / "checkpoints" / name)
        with torch.no_grad():
            log_probs, lens = loaded.model(batch["feats"], batch["feat_lens"])
        hyps = [loaded.tokenizer.decode(ids) for ids in greedy_ctc(log_probs, lens)]
        assert word_error_rate(batch["texts"], hyps)["wer"] == pytest.approx(wers[step]), name
        assert char_error_rate(batch["texts"], hyps)["cer"] == pytest.approx(cers[step]), name


def test_best_checkpoint_follows_the_lowest_dev_wer_not_the_first_or_last(
    monkeypatch, tmp_path, prepared_data_dir
):
    """Dev WERs scripted 60, 40, 50 at steps 2, 4, 6 (a 4-step model scores 100 every time, which
    would hide a best.ckpt kept at the first or last validation, or at the highest WER)."""
    scripted = [60.0, 40.0, 50.0]

    def scripted_wer(self):
        self._val_counts.zero_()
        self.log("val/wer", scripted.pop(0), prog_bar=True)

    monkeypatch.setattr(AsrTask, "on_validation_epoch_end", scripted_wer)
    out = tmp_path / "run"
    result = train(_cfg(prepared_data_dir, out, "trainer.max_steps=6"))
    assert scripted == [] and result["global_step"] == 6
    assert result["best_wer"] == pytest.approx(40.0)
    assert result["best_ckpt"] == str(out / "checkpoints" / "best.ckpt")
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["global_step"] == 4
    assert load_model(out / "checkpoints" / "best.ckpt").role == "teacher"


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt"])
def test_whole_checkpoint_loads_as_data(run_dir, name):
    out, _ = run_dir
    ckpt = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)
    assert {"optimizer_states", "lr_schedulers", "callbacks", "loops"} <= set(ckpt)
    meta = ckpt["asr_kd"]
    assert meta["role"] == "teacher"
    assert meta["model_config"]["_target_"] == "asr_kd.models.ConformerCTC"
    loaded = load_model(out / "checkpoints" / name)
    assert meta["model_config"]["vocab_size"] == loaded.tokenizer.vocab_size
    assert not torch.equal(loaded.model.cmvn_std, torch.ones_like(loaded.model.cmvn_std))


def test_resume_continues_at_the_same_step_with_optimizer_state(
    run_dir, tmp_path, prepared_data_dir
):
    src, _ = run_dir
    out = tmp_path / "run"
    shutil.copytree(src, out)
    before = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    result = train(_cfg(prepared_data_dir, out, "resume=true", "trainer.max_steps=6"))
    assert result["resumed_from"].endswith("last.ckpt")
    after = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert before["global_step"] == 4 and after["global_step"] == 6
    # AdamW's per-parameter step count and the scheduler continue rather than restart
    assert float(after["optimizer_states"][0]["state"][0]["step"]) == 6
    assert after["lr_schedulers"][0]["last_epoch"] == 6
    assert (out / "logs" / "csv" / "version_1" / "metrics.csv").is_file()


def test_existing_run_needs_resume_and_resume_needs_a_run(run_dir, tmp_path, prepared_data_dir):
    out, _ = run_dir
    with pytest.raises(FileExistsError, match="resume=true"):
        train(_cfg(prepared_data_dir, out))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(_cfg(prepared_data_dir, tmp_path / "new", "resume=true"))


def test_non_finite_losses_are_skipped_and_counted(monkeypatch, tmp_path, prepared_data_dir):
    real = AsrTask.compute_loss
    calls = {"n": 0}

    def every_other_nan(self, log_probs, *args):
        losses = real(self, log_probs, *args)
        if self.training:
            calls["n"] += 1
            if calls["n"] % 2 == 1:
                return losses._replace(loss=losses.loss * float("nan"))
        return losses

    monkeypatch.setattr(AsrTask, "compute_loss", every_other_nan)
    result = train(_cfg(prepared_data_dir, tmp_path / "a", "trainer.val_check_interval=4"))
    # the fused AdamW skips a bad step on the device (found_inf): Lightning counts 4 steps,
    # AdamW's own count (its bias correction) only the 2 good ones
    assert result["bad_batches"] == 2 and result["global_step"] == 4
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    assert float(ckpt["optimizer_states"][0]["state"][0]["step"]) == 2
    assert ckpt["asr_kd"]["bad_batches"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_a_run_of_bad_batches_stops_training(monkeypatch, tmp_path, prepared_data_dir):
    def nan_loss(self, log_probs, *args):
        nan = log_probs.sum() * float("nan")
        return DistillLoss(nan, nan.detach(), nan.detach())

    monkeypatch.setattr(AsrTask, "compute_loss", nan_loss)
    cfg = _cfg(prepared_data_dir, tmp_path / "b", "max_consecutive_bad_batches=3")
    with pytest.raises(RuntimeError, match="3 consecutive batches with a non-finite loss"):
        train(cfg)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"a": torch.ones(2)}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_cosine_schedule_shorter_than_its_warmup_is_refused_before_any_output(
    tmp_path, prepared_data_dir
):
    """Regression: ``TEACHER_STEPS=5`` (the demo's 200 warm-up steps, cosine decay) failed in
    ``configure_optimizers``, after config.yaml and logs/ were written, and the hint named
    trainer.max_steps only."""
    overrides = ("optim.schedule=cosine", "optim.warmup_steps=200")
    with pytest.raises(
        ConfigError,
        match=r"^optim\.schedule=cosine needs optim\.total_steps \(5, -1 = trainer\.max_steps\) > "
        r"optim\.warmup_steps \(200\); lower optim\.warmup_steps below 5 or raise "
        r"trainer\.max_steps above 200$",
    ):
        train(tiny_run("train", prepared_data_dir, tmp_path / "run", *overrides, steps=5))
    assert not (tmp_path / "run").exists()


def test_two_process_ddp_on_cpu(tmp_path, prepared_data_dir):
    out = tmp_path / "ddp"
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "asr-kd-train"),
        f"data.dir={prepared_data_dir}",
        f"out_dir={out}",
        "trainer=ddp_cpu",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "checkpoint.every_n_steps=3",
        *TINY_RUN,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    assert "distributed_backend=gloo" in proc.stderr + proc.stdout
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    # Regression: train.log (Hydra's job log) was empty; now the command line, Lightning's
    # messages and the figures the command prints
    log = (out / "train.log").read_text()
    assert f"asr-kd-train data.dir={prepared_data_dir} out_dir={out} trainer=ddp_cpu" in log
    assert "`Trainer.fit` stopped: `max_steps=3` reached." in log
    assert "{'global_step': 3, 'epochs': " in log and "{'global_step': 3, " in proc.stdout
    # Regression: the second process wrote train_ddp_process_1.log and printed the figures again
    assert [p.name for p in out.glob("*.log")] == ["train.log"]
    assert proc.stdout.count("{'global_step': 3, ") == 1


def _record_batches(monkeypatch) -> list[list[str]]:
    """The cut ids of every batch trained from now on, in order (a list that fills up)."""
    seen: list[list[str]] = []
    real = AsrTask.training_step

    def recording(self, batch, batch_idx):
        seen.append(list(batch["cut_ids"]))
        return real(self, batch, batch_idx)

    monkeypatch.setattr(AsrTask, "training_step", recording)
    return seen


def _resumed_vs_whole(monkeypatch, tmp_path, data_dir, stop: int, steps: int):
    """Cut ids per batch of a ``steps``-step run, and of one stopped after ``stop`` steps and
    resumed to ``steps`` (6 batches per epoch on the tiny corpus)."""
    seen = _record_batches(monkeypatch)
    train(tiny_run("train", data_dir, tmp_path / "whole", steps=steps))
    whole, seen[:] = list(seen), []
    train(tiny_run("train", data_dir, tmp_path / "cut", steps=stop))
    train(tiny_run("train", data_dir, tmp_path / "cut", "resume=true", steps=steps))
    return list(seen), whole


def test_resume_mid_epoch_continues_the_epoch_where_it_stopped(
    monkeypatch, tmp_path, prepared_data_dir
):
    seen = _record_batches(monkeypatch)
    # the tiny train subset makes 6 batches an epoch (the next epoch's numbering after a resume
    # is Lightning's business, so the comparison stays inside the first epoch)
    train(tiny_run("train", prepared_data_dir, tmp_path / "whole", steps=6))
    whole, seen[:] = list(seen), []
    # stopped mid-epoch after 3 batches (the DataLoader had already drawn the 4th), then resumed
    train(tiny_run("train", prepared_data_dir, tmp_path / "cut", steps=3))
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "cut", old)
    train(tiny_run("train", prepared_data_dir, tmp_path / "cut", "resume=true", steps=6))
    assert seen == whole

    # a checkpoint written before the sampler state was saved restarts the epoch, with a warning
    ckpt = torch.load(old / "checkpoints" / "last.ckpt", weights_only=True)
    del ckpt["AsrDataModule"]
    torch.save(ckpt, old / "checkpoints" / "last.ckpt")
    seen[:] = []
    with pytest.warns(UserWarning, match="the checkpoint holds no sampler state"):
        train(tiny_run("train", prepared_data_dir, old, "resume=true", steps=4))
    assert seen == [whole[0]]

    # other buckets make another batch sequence: the epoch restarts, and the warning says why
    changed = tmp_path / "changed"
    train(tiny_run("train", prepared_data_dir, changed, steps=3))
    seen[:] = []
    with pytest.warns(UserWarning, match=r"num_buckets 2 -> 3\)"):
        train(
            tiny_run(
                "train", prepared_data_dir, changed, "resume=true", "data.num_buckets=3", steps=4
            )
        )
    assert len(seen) == 1 and seen[0] != whole[3]


def test_resume_at_an_epoch_boundary_starts_the_next_epoch(
    monkeypatch, tmp_path, prepared_data_dir
):
    """Regression: a checkpoint written after an epoch's last batch fast-forwarded through the
    whole epoch on resume, so the next epoch trained no batch at all."""
    seen, whole = _resumed_vs_whole(monkeypatch, tmp_path, prepared_data_dir, stop=6, steps=9)
    assert len(seen) == 9 and seen == whole


def test_resume_from_a_run_stopped_mid_epoch_by_max_steps_keeps_the_next_epochs_order(
    monkeypatch, tmp_path, prepared_data_dir
):
    """Regression: after resuming from the checkpoint ``fit`` writes when ``max_steps`` stops it
    mid-epoch, Lightning's epoch count is one ahead, and the next epoch was shuffled as the one
    after it."""
    seen, whole = _resumed_vs_whole(monkeypatch, tmp_path, prepared_data_dir, stop=3, steps=9)
    assert seen == whole


def test_several_dev_subsets_are_each_validated_and_best_ckpt_follows_the_combined_wer(
    tmp_path, prepared_data_dir
):
    """``data.dev_subset=[dev,test]``: a WER per subset and the combined one in the logs, at
    each validation; best.ckpt is kept on the combined ``val/wer``."""
    out = tmp_path / "run"
    result = train(_cfg(prepared_data_dir, out, "data.dev_subset=[dev,test]"))
    combined, dev, test = (_logged_dev(out, f"val{k}/wer") for k in ("", "/dev", "/test"))
    assert set(combined) == set(dev) == set(test) == {2, 4}
    assert result["best_wer"] == pytest.approx(min(combined.values()))
    assert all(min(dev[s], test[s]) - 1e-4 <= combined[s] <= max(dev[s], test[s]) + 1e-4
               for s in combined)  # fmt: skip
    assert (out / "checkpoints" / "best.ckpt").is_file()


def test_bf16_mixed_with_gradient_clipping_trains(prepared_data_dir, tmp_path):
    """Regression: trainer=gpu's bf16-mixed with gradient_clip_val=5 died at the first step
    (Lightning refuses to clip for an optimizer that unscales itself: fused AdamW)."""
    from asr_kd.training.run import train
    from tests.helpers.tiny_runs import tiny_run

    cfg = tiny_run("train", prepared_data_dir, tmp_path / "t", "trainer.precision=bf16-mixed",
                   "trainer.gradient_clip_val=5.0", steps=2)  # fmt: skip
    assert train(cfg)["global_step"] == 2
