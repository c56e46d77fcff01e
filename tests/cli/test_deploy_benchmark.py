"""python -m asr_kd.cli.deploy_benchmark --quick: every graph exported, checked and timed, the
ratios issue 22 judges printed, a user error as one line."""

from __future__ import annotations

import json
import math

import pytest

from asr_kd.cli.deploy_benchmark import main
from asr_kd.export.quantize import INT8_TOLERANCE


def test_quick_mode_times_every_graph_on_both_runtimes(tmp_path, capsys, one_thread):
    out = tmp_path / "deploy.json"
    main(["--quick", "--out-dir", str(tmp_path / "graphs"), "--json", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {(r["model"], r["graph"], r["precision"]): r for r in result["rows"]}
    assert sorted(rows) == [
        ("student_tiny", "full", "fp32"),
        ("student_tiny", "full", "int8"),
        ("student_tiny", "sherpa stream-320ms", "fp32"),
        ("student_tiny", "stream-320ms", "fp32"),
        ("student_tiny", "stream-320ms", "int8"),
        ("teacher_small", "full", "fp32"),
        ("teacher_small", "full", "int8"),
        ("teacher_small", "sherpa offline", "fp32"),
    ]
    for row in rows.values():
        assert row["rtf"] > 0 and row["call_ms_p95"] >= row["call_ms_mean"] * 0.5
        assert row["macs_per_audio_s"] > 0 and row["mb"] > 0
        assert row["max_abs_diff"] < (INT8_TOLERANCE if row["precision"] == "int8" else 1e-3)
        assert (row["input"] == "audio") == (row["runtime"] == "sherpa-onnx")
    teacher, student = rows["teacher_small", "full", "fp32"], rows["student_tiny", "full", "fp32"]
    assert teacher["macs_per_audio_s"] > 8 * student["macs_per_audio_s"]
    assert rows["teacher_small", "full", "int8"]["mb"] < teacher["mb"] / 3
    stream = rows["student_tiny", "stream-320ms", "fp32"]
    assert stream["call_ms_mean"] < student["call_ms_mean"]  # a chunk, not the utterance
    assert "| student_tiny | stream-320ms | onnxruntime | fp32 | fbank |" in printed
    ratios = "\n".join(result["ratios"])
    assert "onnxruntime: student_tiny stream-320ms / teacher_small offline RTF = " in ratios
    assert "sherpa-onnx: student_tiny stream-320ms / teacher_small offline RTF = " in ratios
    assert "student_tiny stream-320ms / full context RTF" in ratios
    assert not any(math.isnan(r["rtf"]) for r in rows.values())


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--chunks-ms", "300", "--ratio-chunk-ms", "300"],
            "--chunks-ms entry 300 is not a positive multiple of the output frame shift 40 ms "
            "of student_tiny",
        ),
        (
            ["--chunks-ms", "160"],
            "ratio chunk 320 ms is not among the chunks measured [160]: add it to --chunks-ms "
            "or pick one of them",
        ),
    ],
    ids=["chunk_off_the_frame_shift", "ratio_chunk_not_measured"],
)
def test_a_bad_chunk_is_one_error_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--student", "student_tiny", "--teacher", "student_tiny", *args])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
