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


def test_weight_products_profile_times_every_constant_gemm_of_the_step(tmp_path, one_thread):
    import numpy as np
    import onnx

    from asr_kd.export.deploy_benchmark import (
        DeploySettings,
        _products_session,
        _weight_products,
        profile_weight_products,
        random_model,
    )
    from asr_kd.export.onnx import export_step

    settings = DeploySettings("teacher_small", "student_tiny", (320,), 320, 3.0, 1)
    path = export_step(
        random_model("student_tiny"), tmp_path / "student" / "stream-c8-l4.onnx", 8, 4
    )
    graph = onnx.load(str(path)).graph
    consts = {t.name for t in graph.initializer}
    gemms = [n for n in graph.node if n.op_type == "Gemm" and n.input[1] in consts]
    products = _weight_products(path)
    assert len(products) == len(gemms) > 10
    w, b = products[0]  # the session computes what the step's Gemm does: x W^T + b
    session, feed = _products_session(products[:1], rows=8)
    (x,) = feed.values()
    np.testing.assert_allclose(session.run(None, feed)[0], x @ w.T + b, rtol=1e-4, atol=1e-4)

    report = profile_weight_products(settings, tmp_path, step_ms=1.0, runs=2).splitlines()
    assert report[0].startswith(f"weight products of stream-c8-l4.onnx alone: {len(gemms)} Gemms")
    rows = {int(line.split()[0]): line for line in report[1:-1]}
    assert sorted(rows) == [4, 6, 8, 12, 16]
    assert "<- this chunk" in rows[8] and "of the whole step's 1.00 ms" in rows[8]
    assert all(float(line.split()[1]) > 0 for line in rows.values())
    assert "stays in cache), 8 rows:" in report[-1]
