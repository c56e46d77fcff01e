"""SpecAugment: masks inside each utterance only, widths bounded, deterministic, eval = identity."""

from __future__ import annotations

import torch

from asr_kd.data.augment import SpecAugment


def _batch():
    torch.manual_seed(0)
    feats = torch.randn(3, 200, 80) + 5.0
    lens = torch.tensor([200, 120, 40])
    feats[1, 120:] = 0
    feats[2, 40:] = 0
    return feats, lens


def test_eval_mode_is_identity():
    feats, lens = _batch()
    assert SpecAugment().eval()(feats, lens) is feats


def test_masks_stay_inside_lengths_and_within_widths():
    feats, lens = _batch()
    aug = SpecAugment(num_freq_masks=2, freq_mask_width=10, num_time_masks=3, time_mask_ratio=0.1)
    out = aug.train()(feats, lens, generator=torch.Generator().manual_seed(1))
    changed = out != feats  # (B, T, F)
    for b, n in enumerate(lens.tolist()):
        assert not changed[b, n:].any()  # padding untouched
        fill = feats[b, :n].mean()
        assert torch.allclose(out[b][changed[b]], fill.expand(int(changed[b].sum())))
        full_bins = changed[b, :n].all(dim=0)  # masked frequency bins span all frames
        assert 0 < int(full_bins.sum()) <= 2 * 10
        full_frames = changed[b, :n].all(dim=1)
        assert int(full_frames.sum()) <= 3 * int(0.1 * n)


def test_generator_makes_it_deterministic_and_seeds_differ():
    feats, lens = _batch()
    aug = SpecAugment().train()
    a = aug(feats, lens, generator=torch.Generator().manual_seed(3))
    b = aug(feats, lens, generator=torch.Generator().manual_seed(3))
    c = aug(feats, lens, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_probability_zero_leaves_features_alone():
    feats, lens = _batch()
    assert torch.equal(SpecAugment(p=0.0).train()(feats, lens), feats)
