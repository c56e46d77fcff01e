"""Hidden-state KD math: the loss on hand-made tensors, the layer map, the projections."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from asr_kd.distill.hidden import HiddenProjection, layer_map
from asr_kd.distill.losses import KDConfig, distill_loss, hidden_state_loss
from asr_kd.errors import ConfigError


def _pair(valid: int = 3, frames: int = 5, dim: int = 8):
    """A teacher (1, frames, dim) and a student equal to its LayerNorm on the first ``valid``
    frames and far off on the padding."""
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(1, frames, dim, generator=gen) * 3 + 1
    student = F.layer_norm(teacher, (dim,)).clone()
    student[:, valid:] = 100.0
    return student, teacher, torch.tensor([valid])


def test_mse_is_zero_when_the_student_is_the_normalised_teacher_and_padding_is_masked():
    student, teacher, lens = _pair()
    assert hidden_state_loss([student], [teacher], lens, "mse").item() == pytest.approx(0, abs=1e-9)
    # the same pair with every frame valid sees the padding's error
    assert hidden_state_loss([student], [teacher], torch.tensor([5]), "mse").item() > 1000


def test_l1_cos_is_minus_log_sigmoid_one_for_a_perfect_match():
    student, teacher, lens = _pair()
    got = hidden_state_loss([student], [teacher], lens, "l1_cos").item()
    assert got == pytest.approx(-math.log(1 / (1 + math.exp(-1))), rel=1e-5)


def test_l1_cos_by_hand_and_averaged_over_pairs():
    teacher = torch.tensor([[[1.0, -1.0], [2.0, 0.0]]])  # LayerNorm: [1, -1] both frames
    student = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    lens = torch.tensor([1])  # frame 2 is padding
    # frame 1: L1 mean |[0, 2]| = 1; cos([1, 1], [1, -1]) = 0 -> -log sigmoid(0) = log 2
    expected = 1.0 + math.log(2)
    assert hidden_state_loss([student], [teacher], lens).item() == pytest.approx(expected, rel=1e-4)
    perfect = torch.tensor([[[1.0, -1.0], [5.0, 5.0]]])
    two = hidden_state_loss([student, perfect], [teacher, teacher], lens).item()
    assert two == pytest.approx((expected - math.log(1 / (1 + math.exp(-1)))) / 2, rel=1e-4)


def test_distill_loss_adds_the_weighted_hidden_term_and_alpha_mixes_kd():
    student, teacher, lens = _pair(valid=5)
    log_probs = torch.log_softmax(torch.randn(1, 5, 4), -1)
    tokens, token_lens = torch.tensor([[1, 2]]), torch.tensor([2])
    plain = distill_loss(log_probs, lens, tokens, token_lens)
    noisy = student + 0.5
    hidden = hidden_state_loss([noisy], [teacher], lens)
    mixed = distill_loss(
        log_probs, lens, tokens, token_lens, student_hidden=[noisy], teacher_hidden=[teacher],
        hidden_weight=3.0,
    )  # fmt: skip
    assert mixed.loss.item() == pytest.approx(plain.loss.item() + 3 * hidden.item(), rel=1e-6)
    assert mixed.hidden.item() == pytest.approx(hidden.item()) and mixed.kd.item() == 0
    ids, probs = torch.arange(4).expand(1, 5, 4), log_probs.exp()
    both = distill_loss(
        log_probs, lens, tokens, token_lens, ids, probs, alpha=0.5, student_hidden=[noisy],
        teacher_hidden=[teacher], hidden_weight=3.0,
    )  # fmt: skip
    assert both.loss.item() == pytest.approx(
        0.5 * plain.ctc.item() + 0.5 * both.kd.item() + 3 * hidden.item(), rel=1e-6
    )


def test_an_unknown_hidden_loss_is_a_config_error():
    with pytest.raises(ConfigError, match=r"distill\.hidden_loss='l2', expected one of"):
        KDConfig(hidden_weight=1.0, hidden_loss="l2")


def test_layer_map_defaults_to_every_student_layer_and_uniform_teacher_layers():
    assert layer_map(3, 6) == ((1, 2), (2, 4), (3, 6))
    assert layer_map(4, 6) == ((1, 1), (2, 3), (3, 4), (4, 6))
    assert layer_map(3, 3) == ((1, 1), (2, 2), (3, 3))
    assert layer_map(2, 6, student_layers=[2]) == ((2, 6),)
    assert layer_map(2, 6, teacher_layers=[5, 1]) == ((1, 5), (2, 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"teacher_layers": [2, 7, 6]}, r"distill\.teacher_layers has layer 7, out of range: "
         r"the teacher has 6 layers, expected 1\.\.6"),
        ({"student_layers": [0]}, r"distill\.student_layers has layer 0, out of range: "
         r"the student has 3 layers, expected 1\.\.3"),
        ({"teacher_layers": [2, 4]}, r"same length"),
        ({"student_layers": ["x"]}, r"1-based student layer numbers"),
    ],
)  # fmt: skip
def test_layer_map_refuses_what_cannot_pair(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        layer_map(3, 6, **kwargs)


def test_projection_maps_each_chosen_student_layer_to_its_teacher_width():
    proj = HiddenProjection([3, 1], 4, [6, 5])
    layers = [torch.full((2, 7, 4), float(i)) for i in range(1, 4)]
    out = proj(layers)
    assert [tuple(x.shape) for x in out] == [(2, 7, 6), (2, 7, 5)]
    assert torch.allclose(out[0], proj.proj[0](layers[2]))  # pair 1 reads layer 3
