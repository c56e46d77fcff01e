"""Exports a rerun of asr-kd-evaluate takes back: same checkpoint content, settings and export
code; anything else (or a killed export, a file cut short) exports again."""

from __future__ import annotations

import json

import pytest
import torch

import asr_kd.evaluation.exports as exports
from asr_kd.checkpoint import atomic_torch_save
from asr_kd.config import compose
from asr_kd.evaluation.exports import EXPORT_RECORD, reused_export
from asr_kd.evaluation.run import evaluate
from asr_kd.models.loading import load_model
from tests.helpers.spy import count_calls


@pytest.fixture(scope="module")
def student(tmp_path_factory, make_checkpoint):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.ckpt", streaming=True)


def _evaluate(data_dir, out_dir, student, runtime="onnx"):
    return evaluate(
        compose(
            "evaluate",
            [
                f"data.dir={data_dir}",
                f"out_dir={out_dir}",
                f"ckpt.student_kd={student}",
                f"runtime={runtime}",
                "chunk_sizes_ms=[320]",
                "rtf.warmup_utts=0",
                "rtf.max_utts=1",
                "plots=false",
            ],
        )
    )


def _changed(student, path):
    """``student`` with one weight changed: other content, same everything else."""
    ckpt = torch.load(student, weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 0.01
    atomic_torch_save(ckpt, path)
    return path


def test_a_second_evaluate_exports_nothing_and_a_changed_checkpoint_exports_again(
    tmp_path, prepared_data_dir, student, monkeypatch
):
    first = _evaluate(prepared_data_dir, tmp_path / "out", student, "[onnx,sherpa-onnx]")
    record = tmp_path / "out" / "onnx" / "student_kd" / EXPORT_RECORD
    assert json.loads(record.read_text())["files"]["stream-c8-l2.onnx"] > 0
    exported = count_calls(monkeypatch, exports.onnx_export, "export_and_check")
    again = _evaluate(prepared_data_dir, tmp_path / "out", student, "[onnx,sherpa-onnx]")
    assert exported == []  # onnx, and sherpa-onnx's offline and 320 ms directories
    for key in ("onnx_max_abs_diff", "sherpa_max_abs_diff"):
        assert again["meta"][key] == first["meta"][key]
    changed = _changed(student, tmp_path / "changed.ckpt")
    rows = _evaluate(prepared_data_dir, tmp_path / "out", changed)["rows"]
    assert len(exported) == 1 and exported[0][1] == tmp_path / "out" / "onnx" / "student_kd"
    assert rows[0]["wer"] is not None


@pytest.fixture
def loaded(student):
    return load_model(student)


def test_settings_code_and_files_decide_the_reuse(tmp_path, loaded, monkeypatch):
    """Another chunk size, export code or checkpoint exports again; so do a graph cut short and
    a killed export (no record); the same request does not."""
    exported = count_calls(monkeypatch, exports.onnx_export, "export_and_check")

    def export(chunk_sizes=(8,), sha="a"):
        return reused_export(loaded, tmp_path, "asr_kd", chunk_sizes, 2, checkpoint_sha=sha)

    checked = export()
    assert export() == checked and len(exported) == 1
    export(chunk_sizes=(4,))
    assert len(exported) == 2
    export(chunk_sizes=(4,), sha="b")
    assert len(exported) == 3
    monkeypatch.setattr(exports, "export_code_sha", lambda: "edited")
    export(chunk_sizes=(4,), sha="b")
    export(chunk_sizes=(4,), sha="b")
    assert len(exported) == 4
    graph = tmp_path / "stream-c4-l2.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    export(chunk_sizes=(4,), sha="b")
    assert len(exported) == 5

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(exports.onnx_export, "export_and_check", killed)
    with pytest.raises(KeyboardInterrupt):
        export(chunk_sizes=(4,), sha="c")
    assert not (tmp_path / EXPORT_RECORD).exists()  # the next run exports again


def test_the_export_code_is_every_source_the_export_imports():
    """Hashed: the export and model packages and the modules the export imports (the runners
    its check goes through), so an edit to any of them exports again."""
    files = {p.relative_to(exports._PACKAGE).as_posix() for p in exports._export_files()}
    assert {"export/onnx.py", "export/fold.py", "models/conformer.py"} <= files
    assert {"inference/onnx.py", "inference/sherpa.py", "data/tokenizer.py"} <= files
    assert "evaluation/run.py" not in files
