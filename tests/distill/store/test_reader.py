"""SoftTargetStore: what it reads back is what the writer was given, and what a teacher gave."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from asr_kd.config import compose
from asr_kd.data.datamodule import build_datamodule
from asr_kd.distill.store import SoftTargetStore
from asr_kd.distill.store.codecs import decode_hidden, encode_hidden
from asr_kd.errors import ConfigError
from asr_kd.models.loading import load_model


def test_get_returns_each_cut_as_written(hand_store):
    store = SoftTargetStore(hand_store.dir)
    assert len(store) == 4 and "cut-2" in store and "cut-9" not in store
    assert (store.k, store.temperature, store.info["teacher_ckpt"]) == (3, 2.0, "T.ckpt")
    for cut_id, (ids, probs, _) in hand_store.cuts.items():
        got_ids, got_probs = store.get(cut_id)
        assert got_ids.dtype == torch.int64 and got_probs.dtype == torch.float32
        assert torch.equal(got_ids, torch.from_numpy(ids.astype(np.int64)))
        assert torch.equal(got_probs, torch.from_numpy(probs.astype(np.float32)))
    with pytest.raises(KeyError, match=r"cut 'cut-9' has no soft targets in .* \(4 cuts dumped"):
        store.get("cut-9")


def test_batch_is_zero_padded_and_keeps_the_k_most_probable(hand_store):
    store = SoftTargetStore(hand_store.dir)
    cut_ids = ["cut-2", "cut-1", "cut-3"]  # 7, 2, 3 frames, three shards
    ids, probs, lens = store.batch(cut_ids, k=2)
    assert ids.shape == probs.shape == (3, 7, 2) and lens.tolist() == [7, 2, 3]
    for b, cut_id in enumerate(cut_ids):
        want_ids, want_probs, _ = hand_store.cuts[cut_id]
        n = len(want_ids)
        assert torch.equal(ids[b, :n], torch.from_numpy(want_ids[:, :2].astype(np.int64)))
        assert torch.equal(probs[b, :n], torch.from_numpy(want_probs[:, :2].astype(np.float32)))
        assert not ids[b, n:].any() and not probs[b, n:].any()
    assert store.batch(cut_ids)[0].shape == (3, 7, 3)
    with pytest.raises(ConfigError, match=r"distill\.k=4 > k=3 stored in .*index\.json"):
        store.batch(cut_ids, k=4)


def test_hidden_decodes_the_stored_codes_and_pads_with_the_zero_code(hand_store):
    store, layer, spec, params = SoftTargetStore(hand_store.dir), 2, "int8", hand_store.params
    assert store.hidden_layers == (layer,) and store.hidden_compress == spec
    assert store.hidden_dim(layer) == 6
    cut_ids = ["cut-3", "cut-2"]  # 3, 7 frames
    (got,) = store.hidden(cut_ids, [layer])
    assert got.shape == (2, 7, 6) and got.dtype == torch.float32
    for b, cut_id in enumerate(cut_ids):
        frames = hand_store.cuts[cut_id][2]
        codes = torch.from_numpy(encode_hidden(spec, params, frames))
        assert torch.equal(got[b, : len(frames)], decode_hidden(spec, params, codes))
        step = torch.from_numpy(params[1])  # int8: within half a step of each channel
        assert ((got[b, : len(frames)] - torch.from_numpy(frames)).abs() <= step).all()
    zero_code = torch.from_numpy(params[0])  # int8 code 0 decodes to the offset
    assert torch.equal(got[0, 3:], zero_code.expand(4, 6))
    with pytest.raises(KeyError, match=f"teacher layer 1 is not stored in {store.dir}"):
        store.hidden(cut_ids, [1])


class _Batches(torch.utils.data.Dataset):
    """Each item: the store's decoded targets of a list of cuts (what a loader worker returns)."""

    def __init__(self, store, batches):
        self.store, self.batches = store, batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.store.decode_batch(self.batches[i], k=2, layers=[2])


def test_decode_batch_in_a_loader_worker_equals_the_main_process(hand_store):
    store = SoftTargetStore(hand_store.dir)
    batches = [["cut-3", "cut-2"], ["cut-0"], ["cut-1", "cut-0", "cut-2"]]
    here = [store.decode_batch(cut_ids, k=2, layers=[2]) for cut_ids in batches]
    # the store has mapped all three shards; pickled into a worker it carries none of them
    assert len(store._shards) == 3 and not pickle.loads(pickle.dumps(store))._shards
    loader = torch.utils.data.DataLoader(
        _Batches(store, batches), batch_size=None, num_workers=1, multiprocessing_context="fork"
    )
    for want, got in zip(here, loader, strict=True):
        assert got.ids.shape == (len(want.lens), int(want.lens.max()), 2)
        for a, b in zip(
            [want.ids, want.probs, want.lens, *want.hidden],
            [got.ids, got.probs, got.lens, *got.hidden],
            strict=True,
        ):
            assert torch.equal(a, b)
    assert store.decode_batch(["cut-1"]).hidden == ()


def test_stored_targets_are_the_teachers_top_k(targets_dir, teacher_ckpt, prepared_data_dir):
    """The stored ids and probabilities are the top-4 of softmax(log_probs / T), computed here
    independently of ``soften_teacher`` (in float64): ids exact except between genuine ties,
    probabilities to fp16 precision, sorted by decreasing probability."""
    store = SoftTargetStore(targets_dir)
    teacher = load_model(teacher_ckpt)
    cfg = json.loads((targets_dir / "index.json").read_text())
    assert cfg["data_dir"] == str(prepared_data_dir)
    dm = build_datamodule(compose("dump_targets", [f"data.dir={prepared_data_dir}"]).data)
    batch = next(iter(dm.dataloader("train", shuffle=False, max_duration=200.0)))
    with torch.no_grad():
        log_probs, lens = teacher.model(batch["feats"], batch["feat_lens"])
    full = torch.softmax(log_probs.double() / 2.0, dim=-1)  # (B, T', V) at T = 2
    want_probs, want_ids = full.topk(4, dim=-1)
    fp16 = dict(rtol=2**-10, atol=1e-6)  # fp16 storage, plus the batch's float32 noise
    frames = 0
    for b, cut_id in enumerate(batch["cut_ids"]):
        n = int(lens[b])
        got_ids, got_probs = store.get(cut_id)
        assert got_ids.shape == got_probs.shape == (n, 4)
        torch.testing.assert_close(got_probs.double(), want_probs[b, :n], **fp16)
        # an id may differ from the expected one only in a tie: where both have the same
        # probability (to fp16 precision), which also makes the stored ids a true top-4
        prob_of_stored_id = full[b, :n].gather(-1, got_ids)
        torch.testing.assert_close(prob_of_stored_id, want_probs[b, :n], **fp16)
        assert all(len(set(row)) == 4 for row in got_ids.tolist())  # 4 distinct ids
        assert (got_probs[:, :-1] >= got_probs[:, 1:]).all()  # decreasing
        frames += n
    assert frames > 100
    ids_b, probs_b, lens_b = store.batch(batch["cut_ids"], k=2)
    assert ids_b.shape[-1] == 2 and torch.equal(lens_b, lens)
    assert torch.equal(ids_b[0, : lens[0]], store.get(batch["cut_ids"][0])[0][:, :2])


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="asr-kd-dump-targets"):
        SoftTargetStore(tmp_path)
