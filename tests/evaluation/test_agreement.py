"""Each student row against its teacher: frame agreement, KL and the word-error split."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.evaluation.agreement import add_agreement, frame_counts, frame_figures
from asr_kd.evaluation.backends.base import hyps_path
from asr_kd.evaluation.rows import ResultRow
from asr_kd.models.loading import LoadedModel
from tests.helpers.onnx_graphs import random_feats, tiny_loaded


def _batch(loaded, lens=(120, 90)) -> dict:
    feats = torch.zeros(len(lens), max(lens), 80)
    for i, n in enumerate(lens):
        feats[i, :n] = random_feats(loaded, n, seed=i)
    return {"feats": feats, "feat_lens": torch.tensor(lens)}


def test_a_student_identical_to_its_teacher_agrees_everywhere_with_no_kl(tiny):
    loaded = tiny_loaded(tiny, streaming=True)
    batch = _batch(loaded)
    with torch.inference_mode():
        log_probs, lens = loaded.model(batch["feats"], batch["feat_lens"])
    figures = frame_figures(frame_counts(log_probs, log_probs.clone(), lens, blank_id=0))
    assert figures["agree_nonblank"] == 100.0
    assert figures["agree_blank"] in (100.0, None)  # None: the random teacher never says blank
    assert figures["kl_teacher_student"] == pytest.approx(0.0, abs=1e-6)


def test_a_planted_disagreement_gives_the_hand_counted_figures():
    # 5 valid frames (teacher argmax: blank, 1, 2, 2, blank) and one padding frame that differs
    teacher = torch.tensor([[0, 1, 2, 2, 0, 1]])
    student = torch.tensor([[0, 1, 1, 2, 2, 2]])  # frame 3 (non-blank) and 5 (blank) differ
    t_lp = torch.log_softmax(4.0 * torch.nn.functional.one_hot(teacher, 3).float(), -1)
    s_lp = torch.log_softmax(2.0 * torch.nn.functional.one_hot(student, 3).float(), -1)
    counts = frame_counts(t_lp, s_lp, torch.tensor([5]), blank_id=0)
    figures = frame_figures(counts)
    assert figures["agree_nonblank"] == pytest.approx(100 * 2 / 3)
    assert figures["agree_blank"] == pytest.approx(50.0)
    kl = torch.nn.functional.kl_div(s_lp[0, :5], t_lp[0, :5], log_target=True, reduction="sum")
    assert figures["kl_teacher_student"] == pytest.approx(float(kl) / 5)


def _row(model: str, mode: str, quantize: str | None = "none") -> ResultRow:
    """A row with placeholder figures: only its identity matters to add_agreement."""
    names = ("wer", "cer", "sub", "del_", "ins", "rtf", "latency_ms", "params")
    figures = dict.fromkeys(names, 0.0) | {"macs_per_audio_s": 1.0, "model_mb": 1.0}
    ids = dict.fromkeys(("runtime", "energy_note", "num_utts", "audio_s", "ref_words"))
    ids |= dict.fromkeys(("rtf_batch", "batch_size", "chunk_ms", "left_chunks", "threads"))
    ids |= {"threads_batch": None, "graph_mb": None, "cpu_s_per_audio_h": None}
    ids |= {"joules_per_audio_h": None}
    return ResultRow(model=model, subset="test", mode=mode, quantize=quantize, **figures, **ids)


def _write_hyps(out_dir: Path, row: ResultRow, refs: list[str], hyps: list[str]) -> None:
    path = hyps_path(out_dir, row)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"cut{i}\t{r}\t{h}" for i, (r, h) in enumerate(zip(refs, hyps, strict=True))]
    path.write_text("cut_id\treference\thypothesis\n" + "\n".join(lines) + "\n")


def _settings(out_dir: Path, chunk_sizes_ms=(160,)):
    return types.SimpleNamespace(
        subsets=("test",),
        full_context=True,
        chunk_sizes_ms=chunk_sizes_ms,
        left_chunks=None,
        device="cpu",
        out_dir=out_dir,
    )


def test_rows_of_every_model_but_the_teacher_get_the_comparison(tiny, tmp_path):
    teacher = tiny_loaded(tiny, streaming=True)
    copy = LoadedModel(teacher.model, teacher.tokenizer, {}, "student", Path("<copy>"))
    other = tiny(True, vocab_size=13)  # another vocabulary: the error split only
    other = LoadedModel(other, Tokenizer.char(), {}, "student", Path("<other>"))
    models = {"teacher": teacher, "copy": copy, "other": other}
    rows = [_row("teacher", "full"), _row("copy", "full"), _row("copy", "stream-160ms")]
    rows += [_row("copy", "full", "int8"), _row("other", "full")]
    refs = ["A B C D", "E F"]
    _write_hyps(tmp_path, rows[0], refs, ["A X C D", "E F G"])
    for row in rows[1:4]:
        _write_hyps(tmp_path, row, refs, ["A X C D", "E F G"])
    _write_hyps(tmp_path, rows[4], refs, ["A B C", "E F G"])
    corpus = types.SimpleNamespace(batches=lambda subset: iter([_batch(teacher)]))
    out = add_agreement([r.to_dict() for r in rows], models, corpus, _settings(tmp_path))
    assert out[0] == rows[0].to_dict()  # the teacher's row is not compared with itself
    full, stream, int8, other_row = out[1:]
    assert full["agree_nonblank"] == 100.0 and full.get("agree_blank") in (100.0, None)
    assert full["kl_teacher_student"] == pytest.approx(0.0, abs=1e-6)
    assert (full["err_shared"], full["err_own"], full["err_fixed"]) == (100 / 3, 0.0, 0.0)
    assert stream["teacher"] == "teacher" and stream["agree_nonblank"] is not None
    assert stream["kl_teacher_student"] > 1e-4  # chunk attention: not the teacher's context
    assert "agree_nonblank" not in int8 and "fp32" in int8["agreement_note"]
    assert "agree_nonblank" not in other_row
    assert other_row["agreement_note"] == "n/a: teacher vocab 29 != student vocab 13"
    assert (other_row["err_shared"], other_row["err_own"], other_row["err_fixed"]) == (
        pytest.approx(100 / 6),
        pytest.approx(100 / 6),
        pytest.approx(100 / 6),
    )


def test_an_evaluation_without_a_teacher_is_left_as_it_is(tmp_path):
    rows = [_row("student_kd", "full").to_dict()]
    assert add_agreement(rows, {"student_kd": None}, None, _settings(tmp_path)) == rows
