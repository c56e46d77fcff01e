"""CTC and frame-level knowledge-distillation losses (pure functions, no Hydra).

The student learns from the teacher's frame posteriors softened at a temperature ``T``
(Hinton et al., 2015, "Distilling the knowledge in a neural network"):

    loss = (1 - alpha) * CTC + alpha * T^2 * KL(teacher_T || student_T)

Both terms are averaged over valid (unpadded) output frames, so ``alpha`` mixes two numbers of
the same scale (icefall also reports per-frame losses). The ``T^2`` factor keeps the gradient
magnitude of the KD term independent of ``T``.

Shapes (legend): B batch, T student output frames, T_t teacher output frames, V vocabulary
(blank = id 0), k teacher ids kept per frame (k = V for a dense teacher), W = delay_window + 1.

Top-k targets. The teacher's k probabilities are renormalised to sum to one. The student's
full softmax at temperature T is read at the same k ids and *not* renormalised: that is a
(k+1)-way KL with an "other" bucket in which the renormalised teacher has zero mass, so student
mass outside the teacher's top-k is penalised (renormalising the student over the k ids would
leave it free to put mass anywhere else). With ``renormalize=False`` the teacher instead keeps
its own residual mass ``1 - sum(top-k)`` in the "other" bucket, which makes the loss an exact
KL between the two coarsened distributions (zero when student = teacher, for any k).

Streaming students emit later than full-context teachers. ``shift=d`` matches student frame
``t`` with teacher frame ``t - d``; ``delay_window=w`` lets each *utterance* take the lag among
``d .. d+w`` whose mean KL over its frames is smallest (candidates built with one gather). Student
frames with no teacher frame in range (``t < lag``) are left out of the KD average.

Why per utterance, not per frame: a peaky CTC teacher is blank on most frames, so with a
per-frame minimum over ``t-d-w .. t-d`` almost every student frame finds a blank candidate and an
all-blank student scores (near) zero: the old rule collapsed the demo student to 97 % dev WER. A
soft-min over the candidates does not help either: a spike frame's soft-min is still lowest for a
student that says blank there. With one lag per utterance every teacher frame is matched by some
student frame (save the last ``lag`` ones), so skipping a spike costs its full KL; a student that
reproduces the teacher with any constant lag in the window still scores zero.

Hidden-state distillation (DistilHuBERT, Chang et al., arXiv 2110.01900; TutorNet, arXiv
2008.00671): student layer outputs, each passed through a learned ``Linear(D_s -> D_t)``, are
pulled towards teacher layer outputs normalised by a parameter-free LayerNorm (the teacher's
scale differs from layer to layer; the student should not have to learn it):

    loss = (1 - alpha) * CTC + alpha * T^2 * KL + hidden_weight * hidden

``hidden`` is ``L1 - log sigmoid(cos)`` per frame (``hidden_loss="l1_cos"``, DistilHuBERT's
lambda = 1) or the mean squared error (``"mse"``), averaged over valid frames, then over the
layer pairs.

Usage:
    ids, probs = soften_teacher(teacher_log_probs, temperature=2.0, k=8)
    out = distill_loss(student_log_probs, out_lens, tokens, token_lens, ids, probs,
                       alpha=0.5, temperature=2.0)
    out.loss.backward()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from asr_kd.errors import ConfigError
from asr_kd.schemas import HIDDEN_LOSSES, KDConfig  # the distill group's schema: its keys, once

__all__ = [
    "HIDDEN_LOSSES",
    "DistillLoss",
    "KDConfig",
    "ctc_loss",
    "distill_loss",
    "hidden_state_loss",
    "kd_loss",
    "soften_teacher",
]

# A probability this small is treated as zero in the "other" bucket (fp16 rounding of the
# stored top-k probabilities is ~5e-4, so a residual below that carries no information).
_MIN_OTHER_MASS = 1e-3


class DistillLoss(NamedTuple):
    """The total loss and its parts (scalar tensors; ``kd`` and ``hidden`` are 0 when off;
    ``hidden`` may be left out: None)."""

    loss: torch.Tensor
    ctc: torch.Tensor
    kd: torch.Tensor
    hidden: torch.Tensor | None = None


def _frame_mask(lens: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B,) lengths -> (B, num_frames) bool, True on valid frames."""
    return torch.arange(num_frames, device=lens.device)[None, :] < lens[:, None]


def ctc_loss(
    log_probs: torch.Tensor,
    out_lens: torch.Tensor,
    tokens: torch.Tensor,
    token_lens: torch.Tensor,
    blank_id: int = 0,
) -> torch.Tensor:
    """CTC summed over the cuts that have a transcript, divided by their valid frames.

    Args:
        log_probs: (B, T, V) log-softmax outputs.
        out_lens: (B,) valid frames per cut.
        tokens: (B, U) token ids, padded with anything.
        token_lens: (B,) tokens per cut; 0 = no transcript, the cut is left out.
    Returns:
        scalar tensor: CTC nats per frame (0, still attached to the graph, if no cut has text).
    """
    has_text = token_lens > 0
    per_cut = F.ctc_loss(
        log_probs.float().transpose(0, 1),  # (T, B, V); CTC needs fp32 under bf16 autocast
        tokens,
        out_lens,
        token_lens,
        blank=blank_id,
        reduction="none",
        zero_infinity=True,  # an infeasible alignment (too few frames) gives 0, not inf
    )
    frames = (out_lens * has_text).sum().clamp(min=1)
    return (per_cut * has_text).sum() / frames


def soften_teacher(
    teacher_log_probs: torch.Tensor, temperature: float, k: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher log-probs -> the top-k ids and probabilities at ``temperature``.

    ``log_softmax(log_probs / T)`` equals ``log_softmax(logits / T)``: the normaliser cancels.
    The k probabilities are returned as they are (not renormalised); ``kd_loss`` renormalises.

    Args:
        teacher_log_probs: (B, T_t, V).
        k: ids to keep per frame; None or >= V keeps all V (dense).
    Returns:
        ids (B, T_t, k) int64 sorted by decreasing probability, probs (B, T_t, k) float32.
    """
    probs = torch.softmax(teacher_log_probs.float() / temperature, dim=-1)
    vocab = probs.shape[-1]
    if k is None or k >= vocab:
        ids = torch.arange(vocab, device=probs.device).expand_as(probs)
        return ids, probs
    probs, ids = probs.topk(k, dim=-1)
    return ids, probs


def _teacher_candidates(
    x: torch.Tensor, teacher_lens: torch.Tensor, num_frames: int, shift: int, delay_window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher frames each student frame may match: (B, T_t, k) -> (B, T, W, k), valid (B, T, W).

    Candidate ``j`` of student frame ``t`` is teacher frame ``t - shift - j``.

    >>> x = torch.arange(4.0).view(1, 4, 1)
    >>> c, ok = _teacher_candidates(x, torch.tensor([4]), 4, shift=1, delay_window=1)
    >>> c[0, :, :, 0].tolist(), ok[0].tolist()
    ([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 1.0]], [[False, False], [True, False], [True, True], [True, True]])
    """
    lags = shift + torch.arange(delay_window + 1, device=x.device)  # (W,)
    index = torch.arange(num_frames, device=x.device)[:, None] - lags[None, :]  # (T, W)
    valid = (index[None] >= 0) & (index[None] < teacher_lens[:, None, None])  # (B, T, W)
    index = index.clamp(0, x.shape[1] - 1)
    return x[:, index], valid


def _frame_kl(
    student_log_probs_t: torch.Tensor,
    ids: torch.Tensor | None,
    probs: torch.Tensor,
    renormalize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(teacher || student) per candidate frame, and the renormalised teacher probs.

    Args:
        student_log_probs_t: (B, T, V) student log-probs at the temperature.
        ids: (B, T, W, k) teacher ids, or None when dense (k = V, ids = 0..V-1).
        probs: (B, T, W, k) teacher probs at the temperature (not renormalised).
    Returns:
        kl (B, T, W), teacher probs renormalised over k (B, T, W, k).
    """
    mass = probs.sum(-1, keepdim=True).clamp(min=1e-8)
    if ids is None:
        student_at = student_log_probs_t.unsqueeze(2)  # (B, T, 1, V), broadcasts over W
    else:
        expanded = student_log_probs_t.unsqueeze(2).expand(*ids.shape[:3], -1)
        student_at = expanded.gather(-1, ids)  # (B, T, W, k)
    dense = ids is None or ids.shape[-1] >= student_log_probs_t.shape[-1]
    if renormalize or dense:
        p = probs / mass
        return (torch.xlogy(p, p) - p * student_at).sum(-1), p
    # "other" bucket: the teacher keeps its residual mass, the student its mass outside the k ids.
    other = (1.0 - mass.squeeze(-1)).clamp(min=0.0)
    other = torch.where(other > _MIN_OTHER_MASS, other, torch.zeros_like(other))
    p = probs / (mass.squeeze(-1) + other).unsqueeze(-1)
    other = other / (mass.squeeze(-1) + other)
    student_other = torch.log((1.0 - student_at.exp().sum(-1)).clamp(min=1e-6))
    kl = (torch.xlogy(p, p) - p * student_at).sum(-1)
    kl = kl + torch.xlogy(other, other) - other * student_other
    return kl, p


def _utterance_lag(
    kl: torch.Tensor, teacher_blank: torch.Tensor, valid: torch.Tensor, blank_weight: float
) -> torch.Tensor:
    """Index of each utterance's best lag (smallest weighted mean KL), spread over its frames.

    Args:
        kl: (B, T, W) KL per candidate; teacher_blank: (B, T, W) bool, the candidate is a
            blank frame (weighted by ``blank_weight``); valid: (B, T, W) bool.
    Returns:
        (B, T) int64, the same candidate index on every frame of an utterance.

    >>> kl = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])  # lag 1: mean 1/3 < 1
    >>> ok = torch.ones(1, 3, 2, dtype=torch.bool)
    >>> _utterance_lag(kl, torch.zeros_like(ok), ok, 1.0).tolist()
    [[1, 1, 1]]
    """
    weight = torch.where(teacher_blank, blank_weight, 1.0) * valid
    total = (weight * torch.where(valid, kl, torch.zeros_like(kl))).sum(1)  # (B, W)
    count = valid.sum(1)  # (B, W)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.inf))
    best = mean.detach().argmin(-1)  # (B,); a lag is chosen, not learned
    return best.unsqueeze(-1).expand(-1, kl.shape[1])


def kd_loss(
    student_log_probs: torch.Tensor,
    teacher_ids: torch.Tensor | None,
    teacher_probs: torch.Tensor,
    out_lens: torch.Tensor,
    temperature: float,
    blank_weight: float = 1.0,
    blank_threshold: float = 0.5,
    shift: int = 0,
    delay_window: int = 0,
    teacher_lens: torch.Tensor | None = None,
    renormalize: bool = True,
    blank_id: int = 0,
) -> torch.Tensor:
    """``T^2 * KL(teacher_T || student_T)`` averaged over the student's matched valid frames.

    Args:
        student_log_probs: (B, T, V) student log-softmax at temperature 1.
        teacher_ids: (B, T_t, k) int64 teacher ids, or None for a dense teacher (k = V).
        teacher_probs: (B, T_t, k) teacher probabilities at ``temperature``.
        out_lens: (B,) valid student frames; ``teacher_lens`` (B,) defaults to ``out_lens``.
        blank_weight: weight of frames whose (renormalised) teacher blank probability exceeds
            ``blank_threshold``; < 1 keeps the peaky teacher's blank frames from dominating.
        shift, delay_window: each utterance's student frame t is compared with teacher frame
            ``t - lag``, one lag in ``shift .. shift+delay_window`` per utterance: the one
            with the smallest (weighted) mean KL.
        renormalize: see the module docstring (top-k "other" bucket).
    Returns:
        scalar tensor.
    """
    num_frames = student_log_probs.shape[1]
    teacher_lens = out_lens if teacher_lens is None else teacher_lens
    student_t = torch.log_softmax(student_log_probs.float() / temperature, dim=-1)
    probs, valid = _teacher_candidates(
        teacher_probs.float(), teacher_lens, num_frames, shift, delay_window
    )
    ids = None
    if teacher_ids is not None:
        ids, _ = _teacher_candidates(teacher_ids, teacher_lens, num_frames, shift, delay_window)
    kl, p = _frame_kl(student_t, ids, probs, renormalize)  # (B, T, W)
    valid = valid & _frame_mask(out_lens, num_frames).unsqueeze(-1)
    if ids is None:
        p_blank = p[..., blank_id]
    else:
        p_blank = (p * (ids == blank_id)).sum(-1)  # (B, T, W)
    best = _utterance_lag(kl, p_blank > blank_threshold, valid, blank_weight)  # (B, T)
    best_kl = kl.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    matched = valid.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    p_blank = p_blank.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    weight = torch.where(p_blank > blank_threshold, blank_weight, 1.0) * matched
    best_kl = torch.where(matched, best_kl, torch.zeros_like(best_kl))
    frames = matched.sum().clamp(min=1)
    return temperature**2 * (weight * best_kl).sum() / frames


def hidden_state_loss(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    out_lens: torch.Tensor,
    kind: str = "l1_cos",
) -> torch.Tensor:
    """Hidden-state distance, averaged over valid frames and then over layer pairs.

    The teacher side goes through a LayerNorm without weight or bias; the student side is used
    as given (already projected to ``D_t`` by the training task's learned linear layers).

    Args:
        student_hidden: P tensors (B, T, D_t), projected student layer outputs.
        teacher_hidden: P tensors (B, T, D_t), the paired teacher layer outputs (raw).
        out_lens: (B,) valid frames; padding frames are left out.
        kind: "l1_cos" (mean |s - t| over D_t minus log sigmoid(cos(s, t))) or "mse" (mean
            squared error over D_t).
    Returns:
        scalar tensor.

    >>> t = torch.randn(2, 5, 8)
    >>> s = F.layer_norm(t, (8,))
    >>> float(hidden_state_loss([s], [t], torch.tensor([5, 3]), "mse")) < 1e-10
    True
    """
    if kind not in HIDDEN_LOSSES:
        raise ConfigError(f"distill.hidden_loss={kind!r}, expected one of {HIDDEN_LOSSES}")
    if len(student_hidden) != len(teacher_hidden) or not student_hidden:
        raise ValueError(
            f"{len(student_hidden)} student vs {len(teacher_hidden)} teacher hidden states; "
            "expected the same number (> 0) of layer pairs"
        )
    mask = _frame_mask(out_lens, student_hidden[0].shape[1])  # (B, T)
    frames = mask.sum().clamp(min=1)
    total = student_hidden[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student_hidden, teacher_hidden, strict=True):
        s = s.float()
        t = F.layer_norm(t.float(), (t.shape[-1],))  # no weight, no bias
        if kind == "mse":
            per_frame = (s - t).pow(2).mean(-1)
        else:
            per_frame = (s - t).abs().mean(-1) - F.logsigmoid(F.cosine_similarity(s, t, dim=-1))
        total = total + torch.where(mask, per_frame, torch.zeros_like(per_frame)).sum() / frames
    return total / len(student_hidden)


def distill_loss(
    student_log_probs: torch.Tensor,
    out_lens: torch.Tensor,
    tokens: torch.Tensor,
    token_lens: torch.Tensor,
    teacher_ids: torch.Tensor | None = None,
    teacher_probs: torch.Tensor | None = None,
    alpha: float = 0.0,
    temperature: float = 1.0,
    blank_id: int = 0,
    student_hidden: Sequence[torch.Tensor] | None = None,
    teacher_hidden: Sequence[torch.Tensor] | None = None,
    hidden_weight: float = 0.0,
    hidden_loss: str = "l1_cos",
    **kd_options,
) -> DistillLoss:
    """``(1 - alpha) * CTC + alpha * KD + hidden_weight * hidden``; cuts with
    ``token_lens == 0`` get no CTC term.

    Args:
        student_log_probs: (B, T, V); out_lens (B,); tokens (B, U); token_lens (B,).
        teacher_ids, teacher_probs: (B, T_t, k) as for :func:`kd_loss`; ``teacher_probs`` None
            (or ``alpha == 0``) leaves out the KD term.
        student_hidden, teacher_hidden: P tensors (B, T, D_t) each, as for
            :func:`hidden_state_loss` (``hidden_loss`` is its ``kind``); None or
            ``hidden_weight == 0`` leaves out the hidden term.
        kd_options: ``blank_weight``, ``blank_threshold``, ``shift``, ``delay_window``,
            ``teacher_lens``, ``renormalize`` passed to :func:`kd_loss`.
    Returns:
        DistillLoss(loss, ctc, kd, hidden), scalar tensors.
    """
    ctc = ctc_loss(student_log_probs, out_lens, tokens, token_lens, blank_id=blank_id)
    zero = torch.zeros_like(ctc)
    use_kd = teacher_probs is not None and alpha != 0.0
    use_hidden = teacher_hidden is not None and student_hidden is not None and hidden_weight != 0
    if not use_kd and not use_hidden:
        return DistillLoss(ctc, ctc.detach(), zero, zero)
    total, kd, hidden = ctc, zero, zero
    if use_kd:
        kd = kd_loss(
            student_log_probs,
            teacher_ids,
            teacher_probs,
            out_lens,
            temperature,
            blank_id=blank_id,
            **kd_options,
        )
        total = (1.0 - alpha) * ctc + alpha * kd
    if use_hidden:
        hidden = hidden_state_loss(student_hidden, teacher_hidden, out_lens, hidden_loss)
        total = total + hidden_weight * hidden
    return DistillLoss(total, ctc.detach(), kd.detach(), hidden.detach())
