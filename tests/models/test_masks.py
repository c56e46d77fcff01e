"""Chunk masks: the worked examples in the docstrings, and the rules they encode."""

import doctest

import pytest
import torch

from asr_kd.models import masks
from asr_kd.models.masks import attention_mask, chunk_attention_mask, padding_mask


def test_docstring_examples_hold():
    result = doctest.testmod(masks)
    assert result.attempted >= 4 and result.failed == 0


@pytest.mark.parametrize("chunk_size", [1, 3, 4])
@pytest.mark.parametrize("left_chunks", [-1, 0, 2])
def test_chunk_mask_matches_the_rule(chunk_size, left_chunks):
    mask = chunk_attention_mask(11, chunk_size, left_chunks)
    for q in range(11):
        for k in range(11):
            cq, ck = q // chunk_size, k // chunk_size
            allowed = ck <= cq and (left_chunks < 0 or ck >= cq - left_chunks)
            assert mask[q, k].item() == allowed, (q, k)


def test_chunk_size_one_unlimited_is_causal():
    assert torch.equal(chunk_attention_mask(6, 1), torch.ones(6, 6, dtype=torch.bool).tril())


def test_chunk_covering_everything_is_full_context():
    assert chunk_attention_mask(5, 8).all()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_attention_mask(4, 0)
    with pytest.raises(ValueError, match="left_chunks"):
        chunk_attention_mask(4, 2, left_chunks=-2)


def test_valid_queries_never_see_padding_and_no_row_is_empty():
    lengths = torch.tensor([5, 2])
    mask = attention_mask(lengths, 6, chunk_size=2, left_chunks=0)
    valid = padding_mask(lengths, 6)
    for b in range(2):
        n = int(lengths[b])
        assert not mask[b, :n, n:].any()  # valid rows: padding keys masked
        assert torch.equal(mask[b, :n, :n], chunk_attention_mask(n, 2, 0))
    assert mask.any(dim=-1).all()  # softmax never sees an all-masked row (NaN)
    assert torch.equal(valid, torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]).bool())
