"""Greedy CTC decoding on hand-made posteriors (the decoders built on it: tests/inference/)."""

import torch

from asr_kd.models.decode import greedy_ctc


def one_hot_log_probs(paths, vocab=5):
    """(B, T, V) log-probs whose argmax follows each path (padded with token 4)."""
    t = max(len(p) for p in paths)
    lp = torch.full((len(paths), t, vocab), -10.0)
    for b, path in enumerate(paths):
        for i, tok in enumerate(path + [4] * (t - len(path))):
            lp[b, i, tok] = 0.0
    return lp.log_softmax(-1)


def test_greedy_merges_repeats_drops_blanks_and_ignores_padding():
    paths = [[1, 1, 0, 1, 2, 2, 0, 0, 3], [0, 0, 0], [2, 0, 2, 2], [3]]
    lens = torch.tensor([9, 3, 4, 0])
    assert greedy_ctc(one_hot_log_probs(paths), lens) == [[1, 1, 2, 3], [], [2, 2], []]


def test_greedy_blank_id_is_a_parameter():
    lp = one_hot_log_probs([[1, 2, 2, 1, 3]])
    assert greedy_ctc(lp, torch.tensor([5]), blank_id=2) == [[1, 1, 3]]


def test_greedy_padding_frames_would_have_changed_the_result():
    lp = one_hot_log_probs([[1, 0], [1, 0, 3, 3]])
    assert greedy_ctc(lp, torch.tensor([2, 4])) == [[1], [1, 3]]


def test_docstring_examples():
    import doctest

    from asr_kd.models import decode

    assert doctest.testmod(decode).failed == 0
