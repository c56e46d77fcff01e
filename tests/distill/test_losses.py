"""The KD and CTC losses on hand-made tensors with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from asr_kd.distill.losses import ctc_loss, distill_loss, kd_loss, soften_teacher


def _log_probs(batch: int, frames: int, vocab: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.log_softmax(3 * torch.randn(batch, frames, vocab, generator=gen), dim=-1)


def _kl(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Reference KL(p || q) over the last axis, written out."""
    return (p * (p.log() - log_q)).sum(-1)


def test_kl_is_zero_when_student_equals_teacher():
    lp = _log_probs(2, 7, 5)
    lens = torch.tensor([7, 4])
    ids, probs = soften_teacher(lp, temperature=2.0)  # dense
    assert kd_loss(lp, ids, probs, lens, temperature=2.0).item() == pytest.approx(0, abs=1e-6)
    assert kd_loss(lp, None, probs, lens, temperature=2.0).item() == pytest.approx(0, abs=1e-6)
    # top-k with the teacher's residual mass in an "other" bucket: an exact KL, still 0
    ids, probs = soften_teacher(lp, temperature=2.0, k=2)
    loss = kd_loss(lp, ids, probs, lens, temperature=2.0, renormalize=False)
    assert loss.item() == pytest.approx(0, abs=1e-5)


def test_value_and_temperature_squared_scaling():
    student = torch.log_softmax(torch.tensor([[[1.0, 2.0, 0.5]]]), -1)
    teacher = torch.log_softmax(torch.tensor([[[3.0, 0.0, -1.0]]]), -1)
    lens = torch.tensor([1])
    for temp in (1.0, 2.0, 4.0):
        p = torch.softmax(teacher / temp, -1)
        log_q = torch.log_softmax(student / temp, -1)
        expected = temp**2 * _kl(p, log_q).item()
        ids, probs = soften_teacher(teacher, temp)
        got = kd_loss(student, ids, probs, lens, temperature=temp).item()
        assert got == pytest.approx(expected, rel=1e-5)
    # T^2 scaling: a larger T gives a larger weight to a smaller (softer) KL
    assert expected != pytest.approx(_kl(torch.softmax(teacher / 4, -1), student).item())


def test_topk_teacher_is_renormalised_and_student_is_not():
    log_q = torch.log(torch.tensor([[[0.1, 0.2, 0.3, 0.4]]]))
    ids = torch.tensor([[[3, 1]]])
    probs = torch.tensor([[[0.6, 0.2]]])  # raw top-2, mass 0.8
    got = kd_loss(log_q, ids, probs, torch.tensor([1]), temperature=1.0).item()
    p = torch.tensor([0.75, 0.25])
    expected = (p * (p.log() - torch.log(torch.tensor([0.4, 0.2])))).sum().item()
    assert got == pytest.approx(expected, rel=1e-5)
    # "other" bucket: teacher (0.6, 0.2, 0.2 other) vs student (0.4, 0.2, 0.4 other)
    got = kd_loss(log_q, ids, probs, torch.tensor([1]), temperature=1.0, renormalize=False)
    p = torch.tensor([0.6, 0.2, 0.2])
    q = torch.tensor([0.4, 0.2, 0.4])
    assert got.item() == pytest.approx((p * (p / q).log()).sum().item(), rel=1e-5)


def test_shift_matches_student_frame_t_with_teacher_frame_t_minus_d():
    teacher = _log_probs(1, 10, 6, seed=1)
    d = 3
    student = torch.cat([_log_probs(1, d, 6, seed=2), teacher[:, :-d]], dim=1)  # emits d later
    ids, probs = soften_teacher(teacher, 1.0)
    lens = torch.tensor([10])
    assert kd_loss(student, ids, probs, lens, 1.0, shift=d).item() == pytest.approx(0, abs=1e-6)
    assert kd_loss(student, ids, probs, lens, 1.0, shift=0).item() > 0.1


def test_delay_window_takes_each_utterances_best_lag():
    frames, vocab, window = 12, 5, 2
    teacher = _log_probs(2, frames, vocab, seed=3)
    student = _log_probs(2, frames, vocab, seed=4)
    ids, probs = soften_teacher(teacher, 2.0, k=3)
    lens = torch.tensor([12, 9])
    got = kd_loss(student, ids, probs, lens, 2.0, shift=1, delay_window=window)
    # reference: explicit loops over utterances, lags and frames
    p = probs / probs.sum(-1, keepdim=True)
    log_q = torch.log_softmax(student / 2.0, -1)
    total, count = 0.0, 0
    for b in range(2):
        per_lag = []
        for lag in range(1, 2 + window):
            kls = [
                (p[b, t - lag] * (p[b, t - lag].log() - log_q[b, t, ids[b, t - lag]])).sum().item()
                for t in range(lag, int(lens[b]))
            ]
            per_lag.append((sum(kls) / len(kls), sum(kls), len(kls)))
        _, kl_sum, n = min(per_lag)
        total, count = total + kl_sum, count + n
    assert got.item() == pytest.approx(4 * total / count, rel=1e-5)
    # a student that copies the teacher with a constant delay of 0..window frames scores 0
    shifts = [(torch.arange(frames) - d).clamp(min=0) for d in (2, 1)]
    copied = torch.stack([teacher[b, src] for b, src in enumerate(shifts)])
    ids, probs = soften_teacher(teacher, 2.0)
    lens = torch.tensor([frames, frames])
    assert kd_loss(copied, ids, probs, lens, 2.0, delay_window=window).item() < 1e-5
    assert kd_loss(copied, ids, probs, lens, 2.0, delay_window=0).item() > 0.05


def _spiky_teacher(frames: int = 16, spikes=(2, 6, 10)) -> torch.Tensor:
    """(1, frames, 3) CTC-like log-probs: blank (0.98) except token 1 or 2 (0.96) at ``spikes``."""
    probs = torch.tensor([0.98, 0.01, 0.01]).repeat(1, frames, 1)
    for i, t in enumerate(spikes):
        probs[0, t] = (
            torch.tensor([0.02, 0.96, 0.02]) if i % 2 == 0 else torch.tensor([0.02, 0.02, 0.96])
        )
    return probs.log()


def test_delay_window_regression_an_all_blank_student_scores_worse_than_a_lagged_one():
    """The per-frame minimum over t-3 .. t gave an all-blank student KD 0 (every window holds a
    blank teacher frame), no more than a student reproducing the spikes 2 frames late: the demo
    student collapsed to blank (97 % dev WER)."""
    teacher = _spiky_teacher()
    ids, probs = soften_teacher(teacher, 2.0)
    lens = torch.tensor([16])
    all_blank = teacher[:, :1].expand(1, 16, 3)  # the teacher's own blank frame, everywhere
    lagged = teacher[:, (torch.arange(16) - 2).clamp(min=0)]
    blank_kd = kd_loss(all_blank, ids, probs, lens, 2.0, delay_window=3)
    lagged_kd = kd_loss(lagged, ids, probs, lens, 2.0, delay_window=3)
    assert lagged_kd.item() < 1e-5
    assert blank_kd.item() > 0.1


def test_delay_window_regression_kd_alone_does_not_keep_a_blank_student_blank():
    """A few hundred steps of KD alone from a blank-leaning start (as a CTC student begins):
    the old per-frame minimum had gradient ~0 there and the student stayed blank."""
    teacher = _spiky_teacher()
    ids, probs = soften_teacher(teacher, 2.0)
    logits = torch.tensor([4.0, 0.0, 0.0]).repeat(1, 16, 1).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    for _ in range(200):
        loss = kd_loss(torch.log_softmax(logits, -1), ids, probs, torch.tensor([16]), 2.0,
                       delay_window=3)  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    emitted = [int(v) for v in logits[0].argmax(-1) if v != 0]
    assert emitted and emitted[0] == 1 and 2 in emitted


def test_blank_weight_scales_frames_where_the_teacher_says_blank():
    teacher = torch.log(torch.tensor([[[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]]))
    student = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.3, 0.3, 0.4]]]))
    ids, probs = soften_teacher(teacher, 1.0)
    lens = torch.tensor([2])
    per_frame = _kl(probs[0], student[0])
    for w in (1.0, 0.2, 0.0):
        got = kd_loss(student, ids, probs, lens, 1.0, blank_weight=w, blank_threshold=0.5)
        assert got.item() == pytest.approx((w * per_frame[0] + per_frame[1]).item() / 2, rel=1e-5)


def test_padding_frames_are_excluded_and_get_no_gradient():
    student = _log_probs(1, 6, 4, seed=5)
    teacher = _log_probs(1, 6, 4, seed=6)
    ids, probs = soften_teacher(teacher, 2.0, k=2)
    short = kd_loss(student[:, :4], ids[:, :4], probs[:, :4], torch.tensor([4]), 2.0)
    padded = student.clone().requires_grad_(True)
    full = kd_loss(padded, ids, probs, torch.tensor([4]), 2.0, renormalize=False, shift=0)
    full_renorm = kd_loss(padded, ids, probs, torch.tensor([4]), 2.0)
    assert full_renorm.item() == pytest.approx(short.item(), rel=1e-6)
    full.backward()
    assert torch.isfinite(padded.grad).all()
    assert padded.grad[:, 4:].abs().max() == 0


@pytest.mark.parametrize(
    ("shift", "delay_window", "renormalize"), [(2, 0, True), (1, 1, False), (3, 0, False)]
)
def test_padded_frames_do_not_change_the_kd_loss_with_a_shift(shift, delay_window, renormalize):
    """A padded batch scores as its utterances alone, weighted by their matched frames.

    With ``shift`` > 0 the student's padding frames ``len .. len + shift - 1`` still have a
    valid teacher frame ``t - shift`` in range: only the student's own length mask keeps them
    out (``shift=0`` elsewhere hides that).
    """
    vocab, k, temperature = 6, 3, 2.0
    lens = [9, 5, 7]
    frames = max(lens) + 2
    options = dict(shift=shift, delay_window=delay_window, renormalize=renormalize)
    gen = torch.Generator().manual_seed(12)
    alone, padded_student = [], torch.empty(len(lens), frames, vocab)
    padded_ids = torch.empty(len(lens), frames, k, dtype=torch.int64)
    padded_probs = torch.empty(len(lens), frames, k)
    for b, n in enumerate(lens):
        student = torch.log_softmax(3 * torch.randn(1, n, vocab, generator=gen), -1)
        teacher = torch.log_softmax(3 * torch.randn(1, n, vocab, generator=gen), -1)
        ids, probs = soften_teacher(teacher, temperature, k)
        loss = kd_loss(student, ids, probs, torch.tensor([n]), temperature, **options)
        # the utterance's lag: the best fixed shift in the window; frames t >= lag are matched
        per_lag = [
            kd_loss(student, ids, probs, torch.tensor([n]), temperature, shift=lag,
                    renormalize=renormalize).item()
            for lag in range(shift, shift + delay_window + 1)
        ]  # fmt: skip
        assert loss.item() == pytest.approx(min(per_lag), rel=1e-6)
        alone.append((loss.item(), n - shift - per_lag.index(min(per_lag))))
        # padding: a confident student and teacher that disagree (a large KL if counted)
        junk = torch.full((1, frames - n, vocab), -20.0)
        junk[..., b % vocab] = 0.0
        padded_student[b] = torch.cat([student, junk], 1)[0]
        padded_ids[b] = torch.cat([ids, torch.full((1, frames - n, k), 5)], 1)[0]
        padded_probs[b] = torch.cat([probs, torch.full((1, frames - n, k), 1.0 / k)], 1)[0]
    got = kd_loss(
        padded_student, padded_ids, padded_probs, torch.tensor(lens), temperature, **options
    )
    expected = sum(loss * n for loss, n in alone) / sum(n for _, n in alone)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_ctc_is_per_frame_and_cuts_without_text_get_kd_only():
    lp = _log_probs(2, 8, 5, seed=7).requires_grad_(True)
    tokens = torch.tensor([[1, 2, 3], [4, 4, 0]])
    out_lens = torch.tensor([8, 6])
    ref = F.ctc_loss(lp.transpose(0, 1), tokens, out_lens, torch.tensor([3, 2]), reduction="sum")
    assert ctc_loss(lp, out_lens, tokens, torch.tensor([3, 2])).item() == pytest.approx(
        ref.item() / 14, rel=1e-5
    )
    # cut 1 has no transcript: CTC is cut 0's alone, KD still covers both cuts
    no_text = torch.tensor([3, 0])
    only0 = F.ctc_loss(lp[:1].transpose(0, 1), tokens[:1], out_lens[:1], no_text[:1])
    ids, probs = soften_teacher(_log_probs(2, 8, 5, seed=8), 2.0, k=3)
    out = distill_loss(lp, out_lens, tokens, no_text, ids, probs, alpha=0.3, temperature=2.0)
    assert out.ctc.item() == pytest.approx(only0.item() * 3 / 8, rel=1e-5)
    kd = kd_loss(lp, ids, probs, out_lens, 2.0)
    assert out.kd.item() == pytest.approx(kd.item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(0.7 * out.ctc.item() + 0.3 * kd.item(), rel=1e-6)
    out.loss.backward()
    assert lp.grad[1].abs().sum() > 0  # the untranscribed cut still learns from the teacher


def test_alpha_zero_or_no_teacher_is_plain_ctc():
    lp = _log_probs(1, 6, 4, seed=9)
    tokens, token_lens, lens = torch.tensor([[1, 2]]), torch.tensor([2]), torch.tensor([6])
    plain = distill_loss(lp, lens, tokens, token_lens)
    assert plain.kd.item() == 0
    assert plain.loss.item() == pytest.approx(ctc_loss(lp, lens, tokens, token_lens).item())
    assert not math.isnan(plain.loss.item())


def test_bf16_student_gives_a_finite_fp32_loss():
    lp = _log_probs(2, 5, 6, seed=10).to(torch.bfloat16)
    ids, probs = soften_teacher(_log_probs(2, 5, 6, seed=11), 2.0, k=3)
    out = distill_loss(
        lp,
        torch.tensor([5, 3]),
        torch.tensor([[1, 2], [3, 0]]),
        torch.tensor([2, 1]),
        ids,
        probs.half(),
        alpha=0.5,
        temperature=2.0,
        shift=1,
        delay_window=1,
    )
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_docstring_examples():
    import doctest

    from asr_kd.distill import dump, losses
    from asr_kd.training import task

    for module in (dump, losses, task):
        assert doctest.testmod(module).failed == 0, module.__name__
