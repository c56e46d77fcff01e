"""Evaluation in minutes: every row's WER from batched decoding, the batch-1 pass as a check and
the RTF on a sample, rows that resume, several subsets in one call."""

from __future__ import annotations

import json
import logging

import pytest

import asr_kd.evaluation.backends.fbank as fbank
from asr_kd.config import compose
from asr_kd.evaluation.backends.fbank import transcripts_differ, whole_subset_check
from asr_kd.evaluation.run import evaluate
from asr_kd.inference.timing import Decoded
from tests.helpers.spy import count_calls


def _cfg(data_dir, out_dir, student, *more):
    return compose(
        "evaluate",
        [
            f"data.dir={data_dir}",
            f"out_dir={out_dir}",
            f"ckpt.student_kd={student}",
            "runtime=torch",
            "chunk_sizes_ms=[320]",
            "rtf.warmup_utts=0",
            "plots=false",
            *more,
        ],
    )


@pytest.fixture(scope="module")
def student(tmp_path_factory, make_checkpoint):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.ckpt", streaming=True)


def test_stream_rows_are_scored_batched_and_checked_at_batch_1(
    tmp_path, prepared_data_dir, student, monkeypatch
):
    """Two subsets in one call; every row's WER from the batched pass (the chunk-masked forward
    for stream rows); the batch-1 streaming pass over every utterance (check_utts=null) gives
    the same transcripts; the RTF's sample is rtf.max_utts."""
    batch_1 = count_calls(monkeypatch, fbank, "decode_one_at_a_time")
    cfg = _cfg(prepared_data_dir, tmp_path, student, "subsets=[dev,test]", "check_utts=null")
    results = evaluate(cfg)
    rows = results["rows"]
    assert [(r["subset"], r["mode"]) for r in rows] == [
        ("dev", "full"),
        ("dev", "stream-320ms"),
        ("test", "full"),
        ("test", "stream-320ms"),
    ]
    check = results["meta"]["check"]
    for row in rows:
        key = f"student_kd.{row['subset']}.{row['mode']}"
        assert check[key] == {"utts": row["num_utts"], "differ": 0, "cut_ids": []}
        assert row["rtf_batch"] > 0 and row["rtf"] > 0 and row["threads_batch"] >= 1
        assert (tmp_path / "rows" / f"{key}.json").is_file()
    assert len(batch_1) == 4  # one batch-1 pass per row: the check and the RTF
    assert results["meta"]["check_utts"] is None and results["meta"]["rtf_max_utts"] == 200
    md = (tmp_path / "results.md").read_text()
    assert "transcripts of that batch-1 pass against the batched ones: equal in all 4 rows" in md


def test_rtf_sample_and_check_sample(tmp_path, prepared_data_dir, student, monkeypatch):
    """rtf.max_utts=2, check_utts=1: the batch-1 pass decodes 2 utterances, the WER all."""
    seen = []
    real = fbank.decode_one_at_a_time

    def counted(decoder, utts, **kwargs):
        decoded = real(decoder, utts, **kwargs)
        seen.append(len(decoded.hyps))
        return decoded

    monkeypatch.setattr(fbank, "decode_one_at_a_time", counted)
    cfg = _cfg(prepared_data_dir, tmp_path, student, "rtf.max_utts=2", "check_utts=1")
    results = evaluate(cfg)
    assert seen == [2, 2]
    for row in results["rows"]:
        assert row["num_utts"] > 2
        assert results["meta"]["check"][f"student_kd.test.{row['mode']}"]["utts"] == 1


def test_a_subset_the_rtf_sample_covers_is_scored_by_its_batch_1_pass_alone(
    tmp_path, prepared_data_dir, student, monkeypatch
):
    """The tiny subset (< rtf.max_utts): no batched pass, WER from the batch-1 pass over every
    utterance, and the same transcripts as the batched path (rtf.max_utts below the subset)."""
    batched = count_calls(monkeypatch, fbank, "decode_batched")
    whole = evaluate(_cfg(prepared_data_dir, tmp_path / "whole", student))
    assert batched == []
    passes = evaluate(_cfg(prepared_data_dir, tmp_path / "batched", student, "rtf.max_utts=2"))
    assert len(batched) == 2  # full and stream-320ms
    for row, other in zip(whole["rows"], passes["rows"], strict=True):
        key = f"student_kd.test.{row['mode']}"
        hyps = f"hyps/{key}.tsv"
        assert (tmp_path / "whole" / hyps).read_bytes() == (
            tmp_path / "batched" / hyps
        ).read_bytes()
        assert (row["wer"], row["cer"], row["num_utts"]) == (
            other["wer"], other["cer"], other["num_utts"]
        )  # fmt: skip
        assert row["rtf_batch"] is None and row["threads_batch"] is None and row["rtf"] > 0
        assert other["rtf_batch"] > 0
        check = whole["meta"]["check"][key]
        assert check["wer_from"] == "batch-1" and check["utts"] == 0
        assert f"all {row['num_utts']} utterances" in check["note"]
    md = (tmp_path / "whole" / "results.md").read_text()
    assert "from their batch-1 pass over every utterance" in md and "batched ones" not in md


def test_a_rerun_skips_finished_rows_and_a_changed_setting_reruns_only_its_rows(
    tmp_path, prepared_data_dir, student, monkeypatch, caplog
):
    first = evaluate(_cfg(prepared_data_dir, tmp_path, student, "rtf.max_utts=2"))
    batched = count_calls(monkeypatch, fbank, "decode_batched")
    with caplog.at_level(logging.INFO, logger="asr_kd.evaluation.resume"):
        again = evaluate(_cfg(prepared_data_dir, tmp_path, student, "rtf.max_utts=2"))
    assert batched == []
    assert again["rows"] == json.loads(json.dumps(first["rows"]))
    assert again["meta"]["check"] == first["meta"]["check"]
    assert caplog.text.count("(same fingerprint), skipped") == 2
    # another chunk size: the full row is read back, the new stream row decoded
    more = _cfg(prepared_data_dir, tmp_path, student, "rtf.max_utts=2", "chunk_sizes_ms=[160]")
    rows = evaluate(more)["rows"]
    assert [r["mode"] for r in rows] == ["full", "stream-160ms"]
    assert [call[4] for call in batched] == [{"greedy": batched[0][4]["greedy"]}]
    assert batched[0][5] == 4  # chunk_size in encoder frames (160 ms at 40 ms)
    assert rows[0] == first["rows"][0]


def test_a_row_cut_short_by_a_kill_is_decoded_again(
    tmp_path, prepared_data_dir, student, monkeypatch
):
    evaluate(_cfg(prepared_data_dir, tmp_path, student, "rtf.max_utts=2", "full_context=false"))
    (tmp_path / "rows" / "student_kd.test.stream-320ms.json").write_text('{"fingerpr')
    batched = count_calls(monkeypatch, fbank, "decode_batched")
    evaluate(_cfg(prepared_data_dir, tmp_path, student, "rtf.max_utts=2", "full_context=false"))
    assert len(batched) == 1


def test_results_md_names_the_rows_whose_check_failed():
    from asr_kd.evaluation.report import _check_notes

    check = {"s.test.full": {"utts": 20, "differ": 0, "cut_ids": []}}
    check["s.test.stream-320ms"] = {"utts": 20, "differ": 2, "cut_ids": ["a", "b"]}
    meta = {"check": check, "check_utts": 20, "rtf_max_utts": 200, "runtime": "onnx"}
    (note, _) = _check_notes(meta)
    assert "DIFFERENT in `s.test.stream-320ms` (2 of 20)" in note and "s.test.full" not in note
    assert _check_notes({"runtime": "onnx"}) == []  # results written before the check
    check["s.dev.full"] = whole_subset_check(Decoded({"a": "x"}, {}, 1.0, 1.0))
    (compared, whole, _) = _check_notes(meta)
    assert "the other `onnx` rows" in compared and "`s.dev.full`" not in compared
    assert "1 `onnx` row(s) from their batch-1 pass" in whole and "`s.dev.full`" in whole


def test_transcripts_differ_counts_the_first_n_utterances():
    timed = Decoded({"a": "x", "b": "y", "c": "z"}, {}, 1.0, 1.0)
    batched = Decoded({"a": "x", "b": "Y", "c": "Z"}, {}, 1.0, 1.0)
    assert transcripts_differ(timed, batched, 2) == {"utts": 2, "differ": 1, "cut_ids": ["b"]}
    assert transcripts_differ(timed, batched, None)["differ"] == 2
