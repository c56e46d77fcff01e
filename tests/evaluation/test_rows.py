"""ResultRow: the one schema of a results.json row and of the results.md table."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from asr_kd.evaluation.report import load_results, render_markdown
from asr_kd.evaluation.rows import (
    COLUMNS,
    DISTILL_COLUMNS,
    NUMBER_KEYS,
    REQUIRED_KEYS,
    ResultRow,
)

COMMON = dict(model="student_kd", subset="test", wer=12.5, cer=4.25, sub=6.5, del_=4.0, ins=2.0)
COMMON.update(rtf=0.0123, cpu_s_per_audio_h=44.5, joules_per_audio_h=None)
COMMON.update(energy_note="n/a (no RAPL)", num_utts=10, audio_s=90.0, ref_words=200)
COMMON.update(batch_size=1, threads=1, params=1_234_567, macs_per_audio_s=2.5e7, model_mb=4.9)
# The rows each runtime writes, with the keys (and their order) results.json has.
STREAM = ResultRow(
    **COMMON,
    mode="stream-320ms",
    runtime="onnx",
    quantize="int8",
    rtf_batch=None,
    chunk_ms=320,
    left_chunks=2,
    threads_batch=None,
    latency_ms=320.0,
    graph_mb=0.46,
)
FULL_CONTEXT = dict.fromkeys(("chunk_ms", "left_chunks", "latency_ms"))
SHERPA = replace(
    STREAM,
    **FULL_CONTEXT,
    mode="full-sherpa-onnx",
    runtime="sherpa-onnx",
    quantize=None,  # sherpa-onnx rows have no int8 variant: no key
    rtf_scope="sherpa-onnx: fbank from audio + model + greedy CTC search (C++)",
    rtf_without_fbank=0.01,
    graph_mb=0.9,
)
HF = replace(
    SHERPA,
    mode="full",
    runtime="torch",
    quantize="none",
    rtf_scope=None,
    rtf_without_fbank=None,
    rtf_batch=0.002,
    threads_batch=2,
    graph_mb=None,
    source="hf:/models/tiny",
    frame_shift_ms=20.0,
)
HEAD = ["model", "subset", "mode", "wer", "cer", "sub", "del", "ins", "rtf", "runtime"]
COST = ["cpu_s_per_audio_h", "joules_per_audio_h", "energy_note", "num_utts", "audio_s"]
RUN = ["rtf_batch", "batch_size", "chunk_ms", "left_chunks", "threads", "threads_batch"]
MODEL = ["latency_ms", "params", "macs_per_audio_s", "model_mb", "graph_mb"]


def test_keys_in_results_json_order_and_optional_keys_only_where_set():
    assert list(STREAM.to_dict()) == [*HEAD, "quantize", *COST, "ref_words", *RUN, *MODEL]
    assert list(SHERPA.to_dict()) == [
        *HEAD,
        "rtf_scope",
        *COST,
        "ref_words",
        "rtf_without_fbank",
        *RUN,
        *MODEL,
    ]
    assert list(HF.to_dict()) == [
        *HEAD,
        "quantize",
        *COST,
        "ref_words",
        *RUN,
        *MODEL,
        "source",
        "frame_shift_ms",
    ]
    assert STREAM.to_dict()["del"] == 4.0 and "del_" not in STREAM.to_dict()


@pytest.mark.parametrize("row", [STREAM, SHERPA, HF], ids=["stream", "sherpa", "hf"])
def test_json_round_trip(row):
    text = json.dumps(row.to_dict())
    assert ResultRow.from_dict(json.loads(text)) == row
    assert json.dumps(ResultRow.from_dict(json.loads(text)).to_dict()) == text


def test_every_key_is_documented_and_every_row_field_must_be_given():
    for f in fields(ResultRow):
        assert len(f.metadata["doc"]) > 15, f.name
    with pytest.raises(TypeError, match="graph_mb"):
        ResultRow(**{k: v for k, v in STREAM.__dict__.items() if k != "graph_mb"})


def test_load_checks_come_from_the_schema():
    assert REQUIRED_KEYS == (
        *("model", "subset", "mode", "wer", "cer", "sub", "del", "ins", "rtf"),
        *("latency_ms", "params", "macs_per_audio_s", "model_mb"),
    )
    assert set(NUMBER_KEYS) == {
        *("wer", "cer", "sub", "del", "ins", "rtf", "latency_ms", "params"),
        *("macs_per_audio_s", "model_mb", "rtf_batch", "rtf_without_fbank"),
        *("cpu_s_per_audio_h", "joules_per_audio_h", "graph_mb"),
        *("agree_nonblank", "agree_blank", "kl_teacher_student"),
        *("err_shared", "err_own", "err_fixed"),
        *("hotword_recall", "hotword_false", "wer_no_hotword", "hotword_refs", "no_hotword_utts"),
    }


def test_markdown_columns_and_cells(tmp_path):
    headers = [c.header for c in COLUMNS]
    assert headers == [
        *("Model", "Mode", "WER %", "CER %", "Sub %", "Del %", "Ins %", "RTF", "RTF batched"),
        *("Latency ms", "Params", "MACs / audio s", "MB", "Graph MB", "CPU s / audio h"),
        "J / audio h",
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"rows": [r.to_dict() for r in (STREAM, SHERPA)], "meta": {}}))
    md = render_markdown(load_results(path)).splitlines()
    assert "| " + " | ".join(headers) + " |" in md
    stream, sherpa = (
        [c.strip() for c in line.strip("|").split("|")]
        for line in md
        if line.startswith("| student_kd")
    )
    assert stream == [
        *("student_kd (int8)", "stream-320ms", "12.50", "4.25", "6.50", "4.00", "2.00"),
        *("0.0123", "-", "320", "1.23 M", "25.00 M", "4.90", "0.46", "44.50", "n/a (no RAPL)"),
    ]
    assert sherpa[:2] == ["student_kd", "full-sherpa-onnx"] and sherpa[9] == "full utt."


def test_the_teacher_comparison_is_a_second_table_of_the_rows_that_have_it(tmp_path):
    compared = replace(
        STREAM,
        teacher="teacher",
        agree_nonblank=91.25,
        kl_teacher_student=0.1234,
        err_shared=8.5,
        err_own=4.0,
        err_fixed=2.25,
    )
    assert [c.header for c in DISTILL_COLUMNS] == [
        *("Model", "Mode", "Agree non-blank %", "Agree blank %", "KL nats/frame"),
        *("Errors shared %", "Errors own %", "Teacher errors fixed %", "Note"),
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"rows": [r.to_dict() for r in (compared, SHERPA)], "meta": {}}))
    md = render_markdown(load_results(path)).splitlines()
    second = md.index("| " + " | ".join(c.header for c in DISTILL_COLUMNS) + " |")
    cells = [c.strip() for c in md[second + 2].strip("|").split("|")]
    assert cells == [
        *("student_kd (int8)", "stream-320ms", "91.25", "-", "0.1234", "8.50", "4.00", "2.25"),
        "",
    ]
    # the sherpa row has no teacher keys: not in the second table
    assert [line for line in md[second:] if line.startswith("| student_kd")] == [md[second + 2]]
    assert "agree_nonblank" not in SHERPA.to_dict()  # absent, not a column of nulls
