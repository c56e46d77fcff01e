"""Teacher -> student frame-rate conversion (asr_kd/distill/frames.py): the rule from the two
frame shifts, distributions kept, spikes in the covering frame, odd lengths, length matching."""

from __future__ import annotations

import pytest
import torch

from asr_kd.distill.frames import MAX_LENGTH_DIFF, match_lengths, plan_conversion
from asr_kd.errors import ConfigError


def _random_posteriors(b: int, t: int, v: int, seed: int = 0) -> torch.Tensor:
    return torch.softmax(torch.randn(b, t, v, generator=torch.Generator().manual_seed(seed)), -1)


@pytest.mark.parametrize(
    ("teacher_ms", "student_ms", "name"),
    [
        (20, 40, "merge2"),
        (40, 40, "none"),
        (80, 40, "repeat2"),
        (80, 80, "none"),
        (10, 40, "merge4"),
    ],
)
def test_rule_is_chosen_from_the_two_frame_shifts(teacher_ms, student_ms, name):
    assert plan_conversion(teacher_ms, student_ms).name == name


@pytest.mark.parametrize(("teacher_ms", "student_ms"), [(30, 40), (25, 40), (20, 160), (0, 40)])
def test_other_ratios_are_refused_naming_both_shifts(teacher_ms, student_ms):
    with pytest.raises(
        ConfigError, match=f"teacher frame shift {teacher_ms:g} ms.*{student_ms:g} ms"
    ):
        plan_conversion(teacher_ms, student_ms)


@pytest.mark.parametrize(("teacher_ms", "lens"), [(20, [7, 4, 1]), (80, [7, 4, 1])])
def test_converted_frames_are_distributions(teacher_ms, lens):
    probs = _random_posteriors(3, 7, 5)
    out, out_lens = plan_conversion(teacher_ms, 40).apply(probs, torch.tensor(lens))
    for b, n in enumerate(out_lens.tolist()):
        torch.testing.assert_close(out[b, :n].sum(-1), torch.ones(n))


def test_merge_puts_a_one_frame_spike_in_the_covering_student_frame():
    blank, token = 0, 3
    for j in range(6):  # teacher frame j (20 ms) is covered by student frame j // 2 (40 ms)
        probs = torch.zeros(1, 6, 5)
        probs[..., blank] = 1.0
        probs[0, j] = torch.nn.functional.one_hot(torch.tensor(token), 5).float()
        out, _ = plan_conversion(20, 40).apply(probs, torch.tensor([6]))
        assert out[0, :, token].tolist() == [0.5 if i == j // 2 else 0.0 for i in range(3)]


def test_repeat_puts_a_spike_on_both_student_frames_it_covers():
    probs = torch.zeros(1, 3, 4)
    probs[..., 0] = 1.0
    probs[0, 1] = torch.tensor([0.0, 0.0, 1.0, 0.0])  # teacher frame 1 = 80..160 ms
    out, lens = plan_conversion(80, 40).apply(probs, torch.tensor([3]))
    assert lens.tolist() == [6]
    assert out[0, :, 2].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]


def test_merge_of_an_odd_length_keeps_the_last_frame_and_ignores_padding():
    """5 valid teacher frames (and 2 padding frames holding garbage): 3 student frames, the last
    one is teacher frame 4 alone, not averaged with padding."""
    probs = _random_posteriors(1, 7, 4)
    out, lens = plan_conversion(20, 40).apply(probs, torch.tensor([5]))
    assert lens.tolist() == [3]
    torch.testing.assert_close(out[0, 2], probs[0, 4])
    torch.testing.assert_close(out[0, 0], probs[0, :2].mean(0))


def test_merge_averages_hidden_states_the_same_way():
    hidden = torch.arange(10.0).view(1, 5, 2)
    out, lens = plan_conversion(20, 40).apply(hidden, torch.tensor([5]))
    assert out[0].tolist() == [[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]] and lens.tolist() == [3]


def test_match_lengths_cuts_extra_frames_and_repeats_the_last_one():
    x = torch.arange(8.0).view(2, 4, 1)  # cut 0: 4 frames; cut 1: 3 valid frames (4.0, 5.0, 6.0)
    out, lens = match_lengths(x, torch.tensor([4, 3]), torch.tensor([3, 5]))
    assert lens.tolist() == [3, 5]
    assert out[0, :3, 0].tolist() == [0.0, 1.0, 2.0]
    assert out[1, :5, 0].tolist() == [4.0, 5.0, 6.0, 6.0, 6.0]


def test_match_lengths_refuses_a_difference_that_is_no_edge_effect():
    x = torch.zeros(1, 10, 1)
    match_lengths(x, torch.tensor([10]), torch.tensor([10 - MAX_LENGTH_DIFF]))
    with pytest.raises(ConfigError, match="cut a-1: teacher has 10 frames .* the student 7"):
        match_lengths(x, torch.tensor([10]), torch.tensor([7]), cut_ids=["a-1"])
