"""results.json -> results.md and plots: what a person reads, and re-rendering from the CLI."""

from __future__ import annotations

import json

import pytest

from asr_kd.cli.report import main
from asr_kd.evaluation.report import load_results, render_markdown, write_report


def _row(model, subset, mode, wer, latency_ms, macs, chunk_ms=None):
    return {
        "model": model,
        "subset": subset,
        "mode": mode,
        "wer": wer,
        "cer": wer / 3,
        "sub": wer / 2,
        "del": wer / 4,
        "ins": wer / 4,
        "rtf": 0.0123,
        "rtf_batch": 0.002,
        "batch_size": 1,
        "chunk_ms": chunk_ms,
        "threads": 1,
        "latency_ms": latency_ms,
        "params": 1_234_567,
        "macs_per_audio_s": macs,
        "model_mb": 4.9,
        "num_utts": 10,
        "audio_s": 90.0,
    }


@pytest.fixture
def results():
    rows = [
        _row("teacher", "test", "full", 10.0, None, 2.0e9),
        _row("student_kd", "test", "full", 14.0, None, 1.0e8),
        _row("student_kd", "test", "stream-320ms", 15.5, 320.0, 1.0e8, chunk_ms=320),
        _row("student_kd", "dev", "stream-320ms", 16.0, 320.0, 1.0e8, chunk_ms=320),
    ]
    meta = {"date": "2025-01-01T00:00:00", "machine": "test box", "torch": "2.x"}
    return {"rows": rows, "meta": meta}


def test_markdown_has_a_table_per_subset_with_the_figures(results):
    md = render_markdown(results)
    assert "## test (10 utterances, 1.5 min)" in md and "## dev" in md
    lines = [line for line in md.splitlines() if line.startswith("| student_kd | stream-320ms")]
    assert len(lines) == 2
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[2:5] == ["15.50", "5.17", "7.75"]  # WER, CER, Sub
    assert cells[7] == "0.0123" and cells[9] == "320"  # RTF, latency
    assert "| teacher | full | 10.00" in md and "full utt." in md
    assert "1.23 M" in md and "test box" in md


def test_write_report_writes_markdown_and_png_plots(tmp_path, results):
    written = write_report(results, tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["results.md", "wer_vs_latency.png", "wer_vs_macs.png"]
    for p in written[1:]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rerenders_from_json(tmp_path, results, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert main([str(path)]) == 0
    assert (tmp_path / "results.md").read_text() == render_markdown(load_results(path))
    assert "wer_vs_macs.png" in capsys.readouterr().out


def test_missing_keys_and_bad_files_are_named(tmp_path, results):
    del results["rows"][0]["wer"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"row 0 \(teacher\) lacks keys \['wer'\]"):
        load_results(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        load_results(path)
    assert main([str(tmp_path / "absent.json")]) == 2


def test_hand_edited_rows_and_meta_of_the_wrong_type(tmp_path, results, capsys):
    """Regression: a row that is not an object crashed the check itself (AttributeError), and
    "meta": null crashed the rendering, instead of the check's error and status 2."""
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**results, "rows": [*results["rows"], ["teacher", 1.0]]}))
    assert main([str(path)]) == 2
    assert f"row {len(results['rows'])} is not an object" in capsys.readouterr().err
    path.write_text(json.dumps({**results, "meta": None}))
    assert main([str(path)]) == 0
    path.write_text(json.dumps({**results, "meta": [1]}))
    assert main([str(path)]) == 2
    assert '"meta" is not an object' in capsys.readouterr().err
    row = {**results["rows"][0], "wer": "31.3"}  # a quoted number crashed the rendering
    path.write_text(json.dumps({**results, "rows": [row]}))
    assert main([str(path)]) == 2
    assert "not numbers or null: {'wer': '31.3'}" in capsys.readouterr().err


def test_subset_heading_says_how_many_cuts_prepare_dropped(results):
    results["meta"]["prepare"] = {
        "report": "exp/data/prepare_report.json",
        "subsets": {
            "test": {"skipped": 2, "reasons": {"too_short_for_ctc": 2}},
            "dev": {"skipped": 0, "reasons": {}},
        },
    }
    md = render_markdown(results).splitlines()
    assert (
        "## test (10 utterances, 1.5 min; 2 cut(s) dropped by asr-kd-prepare: too_short_for_ctc 2)"
        in md
    )
    assert "## dev (10 utterances, 1.5 min)" in md  # nothing dropped: nothing said
    for row in results["rows"]:
        del row["num_utts"]
    assert "## test (2 cut(s) dropped by asr-kd-prepare: too_short_for_ctc 2)" in (
        render_markdown(results).splitlines()
    )


def test_sub_del_ins_columns_show_their_own_figures(results):
    """Each of Sub/Del/Ins under its own header, with unequal values (the fixture's del == ins
    would hide two swapped columns)."""
    row = {**results["rows"][0], "wer": 12.0, "sub": 6.5, "del": 4.25, "ins": 1.25}
    md = render_markdown({**results, "rows": [row]}).splitlines()
    header = next(line for line in md if line.startswith("| Model |"))
    table_row = next(line for line in md if line.startswith("| teacher | full |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in table_row.strip("|").split("|")]
    by_name = dict(zip(names, cells, strict=True))
    assert (by_name["WER %"], by_name["Sub %"], by_name["Del %"], by_name["Ins %"]) == (
        "12.00",
        "6.50",
        "4.25",
        "1.25",
    )


def test_cost_columns_int8_label_and_wer_vs_cpu_plot(tmp_path, results):
    """CPU-seconds per audio hour in every row; joules where measured, else the reason."""
    for i, row in enumerate(results["rows"]):
        row.update(cpu_s_per_audio_h=40.0 + i, joules_per_audio_h=None, energy_note="n/a (no RAPL)")
    int8 = dict(results["rows"][2], quantize="int8", graph_mb=0.46, cpu_s_per_audio_h=30.5)
    int8.update(joules_per_audio_h=1234.4, energy_note=None)
    results["rows"].insert(3, int8)
    md = render_markdown(results)
    header = next(line for line in md.splitlines() if line.startswith("| Model |"))
    assert header.rstrip(" |").endswith("MB | Graph MB | CPU s / audio h | J / audio h")
    test_table = md.split("## dev")[0]
    fp32_line, int8_line = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in test_table.splitlines()
        if line.startswith("| student_kd") and "stream-320ms" in line
    ]
    assert fp32_line[0] == "student_kd" and fp32_line[-3:] == ["-", "42.00", "n/a (no RAPL)"]
    assert int8_line[0] == "student_kd (int8)" and int8_line[-3:] == ["0.46", "30.50", "1234"]
    written = sorted(p.name for p in write_report(results, tmp_path))
    assert written == ["results.md", "wer_vs_cpu.png", "wer_vs_latency.png", "wer_vs_macs.png"]
    assert (tmp_path / "wer_vs_cpu.png").read_bytes()[:4] == b"\x89PNG"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert load_results(path)["rows"][3]["quantize"] == "int8"
    results["rows"][0]["cpu_s_per_audio_h"] = "fast"
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match="cpu_s_per_audio_h"):
        load_results(path)
