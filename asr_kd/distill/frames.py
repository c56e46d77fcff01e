"""Teacher frames -> student frames: the explicit rule for a teacher of another frame rate.

Our students emit one frame per 40 ms (10 ms fbank, subsampling 4). wav2vec2-style teachers emit
one per 20 ms, Parakeet one per 80 ms. :func:`plan_conversion` picks the rule from the two frame
shifts (an integer ratio ``r``; anything else is refused naming both shifts):

- ``none`` (r = 1): frames are used as they are.
- ``merge<r>`` (teacher faster, 20 -> 40 ms: r = 2): student frame ``i`` gets the *mean of the
  probabilities* of teacher frames ``r*i .. r*i + r - 1`` (the frames it covers). Averaging in
  probability space keeps a distribution (sums to 1) and keeps a one-frame CTC spike as mass
  ``1/r`` on its token in the covering frame; averaging log-probs would instead multiply the
  frames and erase spikes the other frame does not share. A last, incomplete group (an odd
  number of teacher frames) is the mean of the frames it has, so it is never dropped or padded
  with blank. Hidden states (hidden-state KD) are averaged the same way.
- ``repeat<r>`` (teacher slower, 80 -> 40 ms: r = 2): each teacher frame is used for the ``r``
  student frames it covers. Chosen over an 8x student because it keeps the student (and its
  streaming latency grid of 40 ms) what it is; an 8x student is the other option and needs no
  rule: ``model.subsampling_factor=8`` makes the shifts equal (``none``). Repeating puts a
  token's spike on two student frames; CTC allows that (a repeat without a blank between
  collapses to one token).

After the conversion the teacher and the student may still differ by a frame or two at the end
(a 25 ms fbank window and a 400-sample conv kernel see the last samples differently):
:func:`match_lengths` aligns both at the start (frame ``i`` of each starts at ``i`` times the
student shift), cuts the teacher's extra frames or repeats its last frame, and refuses a
difference above ``MAX_LENGTH_DIFF`` frames, which means other audio, not an edge effect.

Shapes: B batch, T_t teacher frames, T student frames, V vocabulary (or D width).

Usage:
    conversion = plan_conversion(teacher_shift_ms=20, student_shift_ms=40)    # merge2
    probs, lens = conversion.apply(probs, lens)          # (B, T_t, V) -> (B, ceil(T_t / 2), V)
    probs, lens = match_lengths(probs, lens, feat_lens // 4)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asr_kd.errors import ConfigError

__all__ = ["MAX_LENGTH_DIFF", "FrameConversion", "match_lengths", "plan_conversion"]

MAX_LENGTH_DIFF = 2  # student frames: more is not an edge effect
_MAX_RATIO = 4  # 10 -> 40 ms at most: a coarser merge would average whole tokens away


@dataclass(frozen=True)
class FrameConversion:
    """``rule`` (none | merge | repeat) by ``factor``, from ``teacher_shift_ms`` to
    ``student_shift_ms``; ``name`` (``merge2``) goes into the soft-target fingerprint."""

    rule: str
    factor: int
    teacher_shift_ms: float
    student_shift_ms: float

    @property
    def name(self) -> str:
        return "none" if self.rule == "none" else f"{self.rule}{self.factor}"

    def apply(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T_t, V) probabilities (or hidden states) and (B,) lengths at the teacher's rate
        -> the same at the student's rate.

        >>> probs = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])   # 3 frames, 20 ms
        >>> out, lens = plan_conversion(20, 40).apply(probs, torch.tensor([3]))
        >>> out.tolist(), lens.tolist()                    # the odd last frame stands alone
        ([[[0.5, 0.5], [0.0, 1.0]]], [2])
        >>> out, lens = plan_conversion(80, 40).apply(probs[:, :2], torch.tensor([2]))
        >>> out[0, :, 1].tolist(), lens.tolist()
        ([0.0, 0.0, 1.0, 1.0], [4])
        """
        r = self.factor
        if self.rule == "none":
            return x, lens
        if self.rule == "repeat":
            return x.repeat_interleave(r, dim=1), lens * r
        b, t = x.shape[:2]
        valid = (torch.arange(t, device=x.device)[None, :] < lens[:, None]).to(x.dtype)  # (B, T_t)
        pad = (-t) % r
        x = torch.nn.functional.pad(x * valid[..., None], (0, 0, 0, pad))
        valid = torch.nn.functional.pad(valid, (0, pad))
        sums = x.reshape(b, -1, r, x.shape[-1]).sum(2)
        counts = valid.reshape(b, -1, r).sum(2).clamp(min=1)
        return sums / counts[..., None], torch.div(lens + r - 1, r, rounding_mode="floor")


def plan_conversion(teacher_shift_ms: float, student_shift_ms: float) -> FrameConversion:
    """The rule for these two frame shifts (module doc); ``ConfigError`` naming both otherwise.

    >>> [plan_conversion(t, 40).name for t in (20, 40, 80)]
    ['merge2', 'none', 'repeat2']
    """
    t, s = float(teacher_shift_ms), float(student_shift_ms)
    slower, faster = max(t, s), min(t, s)
    ratio = slower / faster if faster > 0 else 0.0
    if faster <= 0 or abs(ratio - round(ratio)) > 1e-6 or round(ratio) > _MAX_RATIO:
        raise ConfigError(
            f"teacher frame shift {t:g} ms vs student frame shift {s:g} ms: expected one to be "
            f"1 to {_MAX_RATIO} times the other (merge or repeat whole frames); choose a student "
            f"model.subsampling_factor whose frame shift (10 ms x factor) is such a multiple"
        )
    factor = round(ratio)
    rule = "none" if factor == 1 else ("merge" if t < s else "repeat")
    return FrameConversion(rule, factor, t, s)


def match_lengths(
    x: torch.Tensor, lens: torch.Tensor, target_lens: torch.Tensor, cut_ids=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut or extend (by repeating the last valid frame) each sequence to ``target_lens``.

    Args:
        x: (B, T, V) converted teacher frames; lens: (B,) valid ones; target_lens: (B,) the
            student's output frames of the same cuts; cut_ids: names for the error.
    Returns:
        (B, max(target_lens), V) and ``target_lens``; ``ConfigError`` when a cut differs by
        more than ``MAX_LENGTH_DIFF`` frames.

    >>> x = torch.arange(3.0).view(1, 3, 1)
    >>> match_lengths(x, torch.tensor([3]), torch.tensor([4]))[0][0, :, 0].tolist()
    [0.0, 1.0, 2.0, 2.0]
    """
    target_lens = target_lens.to(lens.device)
    diff = (lens - target_lens).abs()
    if bool((diff > MAX_LENGTH_DIFF).any()):
        b = int((diff > MAX_LENGTH_DIFF).nonzero()[0, 0])
        name = cut_ids[b] if cut_ids is not None else f"utterance {b}"
        raise ConfigError(
            f"cut {name}: teacher has {int(lens[b])} frames at the student's rate, the student "
            f"{int(target_lens[b])} (expected at most {MAX_LENGTH_DIFF} apart: the same audio); "
            "the teacher and the student must read the same cuts"
        )
    t = int(target_lens.max()) if target_lens.numel() else 0
    index = torch.arange(t, device=x.device)[None, :].expand(len(lens), t)
    index = torch.minimum(index, (lens[:, None] - 1).clamp(min=0))
    index = index.clamp(max=max(x.shape[1] - 1, 0))
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1])), target_lens
