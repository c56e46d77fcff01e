"""AsrDataModule: batch contract of docs/internals.md, padding, lengths, max_duration."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from lhotse import CutSet
from lhotse.utils import fastcopy

from asr_kd.config import compose
from asr_kd.data.datamodule import AsrDataModule, build_datamodule, load_cuts
from asr_kd.data.features import FBANK_DIM


def _check_batch(batch: dict, dm: AsrDataModule, cuts: dict) -> None:
    feats, feat_lens = batch["feats"], batch["feat_lens"]
    tokens, token_lens = batch["tokens"], batch["token_lens"]
    b = len(batch["cut_ids"])
    assert feats.dtype == torch.float32 and feats.shape[0] == b and feats.shape[2] == FBANK_DIM
    assert feat_lens.dtype == tokens.dtype == token_lens.dtype == torch.int64
    assert feat_lens.max() == feats.shape[1] and tokens.shape == (b, int(token_lens.max()))
    for i, cut_id in enumerate(batch["cut_ids"]):
        cut = cuts[cut_id]
        n, u = int(feat_lens[i]), int(token_lens[i])
        assert n == cut.num_frames
        assert torch.equal(feats[i, :n], torch.from_numpy(cut.load_features()))
        assert (feats[i, n:] == 0).all() and (tokens[i, u:] == 0).all()
        assert batch["texts"][i] == cut.supervisions[0].text
        assert dm.tokenizer.decode(tokens[i, :u].tolist()) == batch["texts"][i]


def test_batches_follow_the_contract_and_cover_the_subset(prepared_data_dir):
    dm = AsrDataModule(prepared_data_dir, max_duration=12.0, num_buckets=2, num_workers=0)
    cuts = {c.id: c for c in load_cuts(prepared_data_dir, "train")}
    seen = []
    for batch in dm.train_dataloader():
        _check_batch(batch, dm, cuts)
        assert sum(cuts[i].duration for i in batch["cut_ids"]) <= 12.0
        seen += batch["cut_ids"]
    assert sorted(seen) == sorted(cuts)  # every cut once per epoch
    assert len(seen) > 3  # several batches: max_duration did cut them


def test_eval_dataloader_is_in_a_fixed_order_and_val_uses_dev(prepared_data_dir):
    dm = AsrDataModule(prepared_data_dir, num_workers=0)
    first = [b["cut_ids"] for b in dm.dataloader("test")]
    assert first == [b["cut_ids"] for b in dm.dataloader("test")]
    dev_ids = sorted(i for b in dm.val_dataloader() for i in b["cut_ids"])
    assert dev_ids == sorted(c.id for c in load_cuts(prepared_data_dir, "dev"))
    with pytest.raises(FileNotFoundError, match="cuts_nope.jsonl.gz"):
        dm.dataloader("nope")


def test_speed_perturbation_renames_cuts_and_computes_features(prepared_data_dir):
    dm = AsrDataModule(prepared_data_dir, max_duration=30.0, num_workers=0, speed_perturb=True)
    cuts = {c.id: c for c in load_cuts(prepared_data_dir, "train")}
    batches = list(dm.train_dataloader())
    ids = [i for b in batches for i in b["cut_ids"]]
    perturbed = [i for i in ids if "_sp" in i]
    assert perturbed and len(ids) == len(cuts)
    for batch in batches:
        for i, cut_id in enumerate(batch["cut_ids"]):
            base, _, factor = cut_id.partition("_sp")
            expected = cuts[base].num_frames / (float(factor) if factor else 1.0)
            assert abs(int(batch["feat_lens"][i]) - expected) <= 2
            assert batch["texts"][i] == cuts[base].supervisions[0].text


def test_cmvn_tokenizer_and_hydra_config(prepared_data_dir):
    cfg = compose("train", [f"data.dir={prepared_data_dir}", "data.num_workers=0"])
    dm = build_datamodule(cfg.data)
    mean, std = dm.cmvn
    assert mean.shape == std.shape == (FBANK_DIM,) and (std > 0).all()
    assert dm.tokenizer.vocab_size == 29 and dm.tokenizer.blank_id == 0


def test_a_moved_data_dir_still_loads_its_features(prepared_data_dir, tmp_path):
    first, moved = tmp_path / "first", tmp_path / "moved"
    shutil.copytree(prepared_data_dir, first)
    # Point the copy's cuts at its own features, as asr-kd-prepare into ``first`` would have.
    cuts = [
        fastcopy(
            c,
            features=fastcopy(
                c.features,
                storage_path=str(first / "feats" / "test" / Path(c.features.storage_path).name),
            ),
        )
        for c in load_cuts(first, "test")
    ]
    CutSet.from_cuts(cuts).to_file(first / "cuts_test.jsonl.gz")
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    loaded = list(load_cuts(moved, "test"))
    assert len(loaded) == len(cuts)
    assert all(c.features.storage_path.startswith(str(moved)) for c in loaded)
    assert loaded[0].load_features().shape[1] == FBANK_DIM


def test_one_bucket_and_one_cut_subsets_batch_without_bucketing(prepared_data_dir, tmp_path):
    """Regression: lhotse's bucketing sampler asserts num_buckets > 1, so num_buckets=1, or a
    subset of a single cut (num_buckets is capped by the cut count), crashed."""
    dm = AsrDataModule(prepared_data_dir, max_duration=12.0, num_buckets=1, num_workers=0)
    cuts = {c.id: c for c in load_cuts(prepared_data_dir, "train")}
    assert sorted(i for b in dm.train_dataloader() for i in b["cut_ids"]) == sorted(cuts)
    data = tmp_path / "data"
    shutil.copytree(prepared_data_dir, data)
    one = next(iter(load_cuts(data, "test")))
    CutSet.from_cuts([one]).to_file(data / "cuts_test.jsonl.gz")
    batches = list(AsrDataModule(data, num_workers=0).dataloader("test"))
    assert [b["cut_ids"] for b in batches] == [[one.id]]
