"""What distillation did: each student row of an evaluation compared with its teacher.

When the evaluated checkpoints include one named ``teacher`` (:data:`TEACHER`), every other
model's rows get, beside their WER (keys declared in :class:`~asr_kd.evaluation.rows.ResultRow`):

- ``agree_nonblank``: percent of the frames where the teacher's argmax is not blank on which
  the student's argmax is the same token (the frames that carry the transcript);
  ``agree_blank``: the same on the teacher's blank frames.
- ``kl_teacher_student``: mean KL(teacher || student) per frame, nats, over every valid frame
  of the subset: ``sum_v p_t(v) (log p_t(v) - log p_s(v))``.
- ``err_shared``, ``err_own``, ``err_fixed``: the student's word errors its teacher also makes
  at the same place, its own, and the teacher's errors it does not make, in percent of reference
  words (:func:`asr_kd.metrics.error_split` on the rows' hypotheses files).

The frame figures come from one batched torch pass per subset on ``device``: the teacher's full
context, and each student at each row's context (full, or the chunk attention mask of a
``stream-<N>ms`` row, which equals ``forward_chunk`` to 1e-4). The ONNX graphs are checked
against torch before decoding, so the figures hold for runtime=onnx rows; int8, sherpa-onnx and
beam-search rows get the error split only. The frame figures need the teacher's frame rate and
vocabulary: a teacher with others (a transformers model) gives the error split only, and
``agreement_note`` says why.

Usage:
    rows = add_agreement(rows, models, corpus, settings)   # in asr_kd.evaluation.run
    frame_counts(teacher_log_probs, student_log_probs, lens, blank_id=0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from tqdm import tqdm

from asr_kd.evaluation.backends.base import Corpus, hyps_path, read_hyps
from asr_kd.evaluation.rows import ResultRow
from asr_kd.evaluation.settings import EvalSettings
from asr_kd.metrics import error_split
from asr_kd.models.loading import LoadedModel
from asr_kd.models.streaming import chunk_frames

__all__ = ["TEACHER", "add_agreement", "frame_counts", "frame_figures", "frames_note"]

TEACHER = "teacher"  # the checkpoint name (``ckpt.teacher``) the other models are compared with
_COUNTS = ("nonblank_agree", "nonblank", "blank_agree", "blank", "kl_sum", "frames")


def frame_counts(
    teacher: torch.Tensor, student: torch.Tensor, lens: torch.Tensor, blank_id: int
) -> dict[str, float]:
    """Agreement and KL counts of one batch, summed over its valid frames.

    teacher, student: (B, T', V) log-probabilities of the same frames; lens: (B,) valid frames.
    Returns :data:`_COUNTS`: frames where the teacher's argmax is not blank (``nonblank``) and
    where the student's argmax equals it there (``nonblank_agree``), the same on the teacher's
    blank frames, the summed KL(teacher || student) in nats and the number of valid frames.

    >>> lp = torch.tensor([[[0.0, -9.0], [-9.0, 0.0], [-9.0, 0.0]]])  # argmax 0 (blank), 1, 1
    >>> c = frame_counts(lp, lp.flip(-1), torch.tensor([2]), blank_id=0)  # frame 3 is padding
    >>> c["nonblank_agree"], c["nonblank"], c["blank_agree"], c["blank"], c["frames"]
    (0.0, 1.0, 0.0, 1.0, 2.0)
    """
    valid = torch.arange(teacher.size(1), device=lens.device)[None, :] < lens[:, None]
    t_best, s_best = teacher.argmax(-1), student.argmax(-1)  # (B, T')
    agree, blank = (t_best == s_best) & valid, (t_best == blank_id) & valid
    kl = (teacher.exp() * (teacher - student)).sum(-1)  # (B, T')
    sums = {
        "nonblank_agree": agree & ~blank,
        "nonblank": valid & ~blank,
        "blank_agree": agree & blank,
        "blank": blank,
        "frames": valid,
    }
    counts = {k: float(v.sum()) for k, v in sums.items()}
    return counts | {"kl_sum": float(kl.masked_fill(~valid, 0.0).sum())}


def frame_figures(counts: Mapping[str, float]) -> dict[str, float | None]:
    """Summed :func:`frame_counts` -> the rows' ``agree_nonblank``, ``agree_blank`` (percent;
    None without such frames) and ``kl_teacher_student`` (nats per frame)."""

    def percent(part: str, whole: str) -> float | None:
        return 100.0 * counts[part] / counts[whole] if counts[whole] else None

    return {
        "agree_nonblank": percent("nonblank_agree", "nonblank"),
        "agree_blank": percent("blank_agree", "blank"),
        "kl_teacher_student": counts["kl_sum"] / counts["frames"] if counts["frames"] else None,
    }


def frames_note(teacher, student) -> str | None:
    """Why the frame figures of ``student`` against ``teacher`` cannot be computed, or None."""
    if not (isinstance(teacher, LoadedModel) and isinstance(student, LoadedModel)):
        return "n/a: frame figures need two asr_kd checkpoints (same features, frame rate, vocab)"
    t, s = teacher.model, student.model
    if t.vocab_size != s.vocab_size:
        return f"n/a: teacher vocab {t.vocab_size} != student vocab {s.vocab_size}"
    if t.frame_shift_ms != s.frame_shift_ms:
        return f"n/a: teacher frame shift {t.frame_shift_ms} ms != student {s.frame_shift_ms} ms"
    return None


def _contexts(loaded: LoadedModel, settings: EvalSettings) -> dict[str, tuple]:
    """Mode -> (chunk_size, left_chunks) of the forward pass of each of the model's rows."""
    contexts = {"full": (None, -1)} if settings.full_context else {}
    if getattr(loaded.model, "streaming", False):
        left_chunks = loaded.model.resolve_left_chunks(settings.left_chunks)
        for ms in settings.chunk_sizes_ms:
            contexts[f"stream-{ms:g}ms"] = (chunk_frames(loaded.model, ms), left_chunks)
    return contexts


@torch.inference_mode()
def _subset_counts(teacher, students, corpus: Corpus, subset: str, settings) -> dict:
    """(model, mode) -> summed :func:`frame_counts` over ``subset``, one teacher pass per batch."""
    device = settings.device
    for loaded in (teacher, *students.values()):
        loaded.model.to(device)
    totals = {}
    for batch in tqdm(corpus.batches(subset), desc=f"agreement {subset}", unit="batch"):
        feats, lens = batch["feats"].to(device), batch["feat_lens"].to(device)
        t_lp, out_lens = teacher.model(feats, lens)
        for name, loaded in students.items():
            for mode, (chunk_size, left_chunks) in _contexts(loaded, settings).items():
                s_lp, _ = loaded.model(feats, lens, chunk_size=chunk_size, left_chunks=left_chunks)
                counts = frame_counts(t_lp, s_lp, out_lens, teacher.tokenizer.blank_id)
                total = totals.setdefault((name, mode), dict.fromkeys(_COUNTS, 0.0))
                for key, value in counts.items():
                    total[key] += value
    for loaded in (teacher, *students.values()):
        loaded.model.to("cpu")
    return totals


def _teacher_row(rows: list[ResultRow], subset: str) -> ResultRow | None:
    """The teacher's full-context fp32 row of ``subset`` (its hypotheses are the reference)."""
    for row in rows:
        if (row.model, row.subset, row.mode) == (TEACHER, subset, "full"):
            if row.quantize in (None, "none"):
                return row
    return None


def _split(out_dir, teacher: ResultRow, row: ResultRow) -> dict[str, float]:
    t_hyps, s_hyps = read_hyps(hyps_path(out_dir, teacher)), read_hyps(hyps_path(out_dir, row))
    ids = sorted(s_hyps)
    refs = [s_hyps[k][0] for k in ids]
    split = error_split(refs, [t_hyps[k][1] for k in ids], [s_hyps[k][1] for k in ids])
    return {f"err_{k}": split[k] for k in ("shared", "own", "fixed")}


def add_agreement(rows: list[dict], models: dict, corpus: Corpus, settings: EvalSettings):
    """``rows`` (results.json dicts) with the figures of the module docstring on every row of a
    model other than the teacher; unchanged when no model is named :data:`TEACHER`."""
    if TEACHER not in models:
        return rows
    teacher = models[TEACHER]
    students = {n: m for n, m in models.items() if n != TEACHER and not frames_note(teacher, m)}
    parsed = [ResultRow.from_dict(r) for r in rows]
    for subset in settings.subsets:
        teacher_row = _teacher_row(parsed, subset)
        counts = _subset_counts(teacher, students, corpus, subset, settings) if students else {}
        for i, row in enumerate(parsed):
            if row.subset != subset or row.model == TEACHER:
                continue
            figures = {"teacher": TEACHER}
            if teacher_row is not None:
                figures |= _split(settings.out_dir, teacher_row, row)
            key = (row.model, row.mode)
            if key in counts and row.quantize in (None, "none"):
                figures |= frame_figures(counts[key])
            else:
                note = frames_note(teacher, models[row.model])
                figures["agreement_note"] = note or "n/a: frame figures on the fp32 greedy rows"
            parsed[i] = replace(row, **figures)
    return [r.to_dict() for r in parsed]
