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
from asr_kd.data.layout import DataDir
from asr_kd.data.simulated import Opening, opening, write_simulated
from asr_kd.errors import ConfigError


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


def test_prepared_speed_copies_are_trained_on_with_their_stored_features(prepared_sp_data_dir):
    """The copies from asr-kd-prepare speed_perturb=[0.9,1.1] are batched like any cut, with
    their stored fbank, once per epoch, from the shuffled manifest (a copy lies next to its
    original in the subset's file); on-the-fly perturbation on top of them is refused."""
    data = prepared_sp_data_dir
    dm = AsrDataModule(data, max_duration=12.0, num_buckets=2, num_workers=0)
    cuts = {c.id: c for c in load_cuts(data, "train")}
    seen = []
    for batch in dm.train_dataloader():
        _check_batch(batch, dm, cuts)
        seen += batch["cut_ids"]
    assert sorted(seen) == sorted(cuts)
    assert sum(i.endswith("_sp0.9") for i in seen) == sum(i.endswith("_sp1.1") for i in seen)
    assert 3 * sum("_sp" not in i for i in seen) == len(seen)
    assert DataDir(data).shuffled_cuts(["train"], seed=0).is_file()
    with pytest.raises(ConfigError, match=r"^data.speed_perturb=true, but the training subsets "):
        AsrDataModule(data, num_workers=0, speed_perturb=True)


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


# LibriSpeech 960 h's three training subsets at 1/50 of the cuts and 1/10 of the speakers.
SIMULATED = {
    "train-clean-100": (571, 25),
    "train-clean-360": (2080, 92),
    "train-other-500": (2974, 117),
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A data dir of :data:`SIMULATED` (id-sorted subsets, no audio) and speaker -> subset."""
    root = tmp_path_factory.mktemp("simulated")
    return root, write_simulated(root, SIMULATED, seed=0)


def _simulated_dm(root: Path, **kwargs) -> AsrDataModule:
    # The buffer is to the manifest as lhotse's default 20 000 is to LibriSpeech's 281 k cuts.
    return AsrDataModule(
        root, train_subset=list(SIMULATED), max_duration=60.0, num_buckets=4,
        buffer_size=400, num_workers=0, **kwargs,
    )  # fmt: skip


def _epoch(sampler, epoch: int = 0) -> list[list[str]]:
    sampler.set_epoch(epoch)
    return [[c.id for c in batch] for batch in sampler]


def test_several_subsets_are_mixed_from_an_epochs_first_batches(simulated):
    """Regression: subsets read one after the other (sorted by id) gave an epoch that began with
    train-clean-100 alone, a few speakers at a time; the sampler's buffer cannot mix that."""
    root, speakers = simulated
    total = sum(n for n, _ in SIMULATED.values())
    expected = {s: n / total for s, (n, _) in SIMULATED.items()}

    def mixed(dm) -> tuple[bool, Opening]:
        sampler = dm.train_sampler()
        first = opening(sampler, 0, round(0.3 * len(_epoch(sampler))), speakers)
        return all(abs(first.shares[s] / expected[s] - 1) <= 0.2 for s in expected), first

    dm = _simulated_dm(root)
    ok, first = mixed(dm)
    assert ok, first.shares
    assert first.num_speakers >= 200  # of 234
    assert dm.layout.shuffled_cuts(list(SIMULATED), 0).is_file()
    assert sorted(i for b in _epoch(dm.train_sampler()) for i in b) == sorted(
        c.id for s in SIMULATED for c in load_cuts(root, s)
    )  # every cut once per epoch
    assert opening(dm.train_sampler(), 1, 20, speakers).cut_ids != first.cut_ids[:20]

    ok, before = mixed(_simulated_dm(root, global_shuffle=False))
    assert not ok and before.counts["train-other-500"] == 0 and before.num_speakers < 150


def test_one_training_subset_keeps_its_own_order(prepared_data_dir):
    """The demo's single subset: lhotse's batches over the prepared file, nothing written."""
    from lhotse.dataset import DynamicBucketingSampler

    dm = AsrDataModule(prepared_data_dir, max_duration=12.0, num_buckets=2, num_workers=0)
    sampler = dm.train_sampler()
    lhotse = DynamicBucketingSampler(
        load_cuts(prepared_data_dir, "train"), max_duration=12.0, num_buckets=2, shuffle=True,
        seed=0, world_size=1, rank=0,
    )  # fmt: skip
    for epoch in (0, 1):
        lhotse.set_epoch(epoch)
        assert _epoch(sampler, epoch) == [[c.id for c in b] for b in lhotse]
    assert "shuffled_manifest" not in sampler.settings
    assert not dm.layout.shuffled_cuts(["train"], 0).exists()


def test_resume_mid_epoch_on_the_shuffled_manifest_goes_on_after_the_last_trained_batch(
    simulated,
):
    root, _ = simulated
    uninterrupted = _epoch(_simulated_dm(root).train_sampler())
    first = _simulated_dm(root)
    sampler = first.train_sampler()
    sampler.set_epoch(0)
    trained = []
    for batch in sampler:
        trained.append([c.id for c in batch])
        sampler.batch_trained()
        if len(trained) == 7:
            break
    state = first.state_dict()
    assert state["data"]["shuffled_manifest"] == first.layout.shuffled_cuts(list(SIMULATED), 0).name
    resumed = _simulated_dm(root)
    resumed.load_state_dict(state)
    rest = [[c.id for c in batch] for batch in resumed.train_sampler()]
    assert trained + rest == uninterrupted


def test_several_dev_subsets_give_one_val_loader_each_in_order(prepared_data_dir):
    dm = AsrDataModule(prepared_data_dir, dev_subset=["dev", "test"], num_workers=0)
    assert dm.dev_subsets == ["dev", "test"]
    loaders = dm.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2
    for subset, loader in zip(["dev", "test"], loaders, strict=True):
        ids = sorted(i for b in loader for i in b["cut_ids"])
        assert ids == sorted(c.id for c in load_cuts(prepared_data_dir, subset))
    with pytest.raises(ConfigError, match=r"data.dev_subset=\[\] names no subset"):
        AsrDataModule(prepared_data_dir, dev_subset=[], num_workers=0)
