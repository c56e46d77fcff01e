"""The CPU dropout: nn.Dropout's distribution (rate, unbiased scale, independent elements) from a
cheaper mask, repeatable under torch.manual_seed, and nn.Dropout itself in eval mode."""

import doctest

import pytest
import torch
from torch import nn

from asr_kd.models import dropout
from asr_kd.models.conformer import ConformerCTC
from asr_kd.models.dropout import Dropout, keep_mask


def test_docstring_examples_hold():
    result = doctest.testmod(dropout)
    assert result.attempted >= 1 and result.failed == 0


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_each_of_the_four_lanes_of_a_random_word_drops_at_rate_p(p):
    """Elements i, i+4, i+8... share a lane of the 64-bit words: a lane drawn from fewer than
    16 uniform bits (a sign bit never set, say) drops at another rate."""
    torch.manual_seed(0)
    mask = keep_mask((200_000, 4), p)  # column j = lane j of every word
    dropped = (mask == 0).float().mean(dim=0)
    # 4 standard errors of a rate over 200 k draws: at most 0.0045
    assert torch.allclose(dropped, torch.full((4,), p), atol=0.0045), dropped
    assert mask.mean().item() == pytest.approx(1.0, abs=0.006)  # kept elements scaled by 1/(1-p)


def test_neighbouring_elements_drop_independently():
    torch.manual_seed(0)
    dropped = keep_mask((400_000,), 0.5) == 0
    both = (dropped[:-1] & dropped[1:]).float().mean().item()
    assert both == pytest.approx(0.25, abs=0.004)


def test_training_output_is_the_input_times_the_mask_and_so_is_its_gradient():
    x = torch.randn(64, 96, requires_grad=True)
    torch.manual_seed(3)
    y = Dropout(0.2).train()(x)
    torch.manual_seed(3)
    mask = keep_mask(x.shape, 0.2)
    assert torch.equal(y, x * mask)
    y.sum().backward()
    assert torch.equal(x.grad, mask)


def test_eval_mode_and_p_zero_are_the_identity_and_p_one_drops_everything():
    x = torch.randn(8, 16)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert not Dropout(1.0).train()(x).any()


def test_a_seeded_training_step_repeats():
    model = ConformerCTC(d_model=32, num_layers=1, num_heads=2, dropout=0.3).train()
    feats, lens = torch.randn(2, 40, 80), torch.tensor([40, 31])
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(model(feats, lens)[0])
    assert torch.equal(*outs)
    assert not torch.equal(outs[0], model(feats, lens)[0])  # another draw, another mask


def test_the_conformer_uses_it_everywhere_it_drops():
    model = ConformerCTC(d_model=32, num_layers=2, num_heads=2)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 1 + 2 * 6 and all(isinstance(m, Dropout) for m in drops)
