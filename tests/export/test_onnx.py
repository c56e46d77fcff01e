"""ONNX export (asr_kd.export.onnx): graphs checked against torch, the same log-probs and text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from asr_kd.config import compose
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.evaluation.run import evaluate
from asr_kd.export.onnx import export_checkpoint, export_full, export_step, run
from asr_kd.inference.decoders import StreamingGreedyDecoder
from asr_kd.inference.onnx import (
    OnnxCTC,
    OnnxStreamingCTC,
    OnnxStreamingDecoder,
    read_metadata,
    step_file_name,
)
from asr_kd.models.decode import greedy_ctc
from asr_kd.models.loading import LoadedModel
from tests.helpers.onnx_graphs import random_feats, tiny_loaded, torch_stream
from tests.helpers.tiny_runs import evaluate_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def student(tiny) -> LoadedModel:
    return tiny_loaded(tiny, streaming=True)


@pytest.mark.parametrize("streaming", [False, True], ids=["batch_norm_teacher", "student"])
def test_full_graph_matches_torch_forward(tmp_path, tiny, streaming):
    loaded = tiny_loaded(tiny, streaming)
    runner = OnnxCTC(export_full(loaded, tmp_path / "full.onnx"))
    for frames in (203, 61, 4):  # dynamic length, down to one encoder frame
        feats = random_feats(loaded, frames)
        with torch.inference_mode():
            ref, lens = loaded.model(feats[None], torch.tensor([frames]))
        got = runner.log_probs(feats.numpy())
        assert got.shape == (frames // 4, 29)
        assert np.abs(got - ref[0].numpy()).max() < 1e-4
        text = loaded.tokenizer.decode(greedy_ctc(ref, lens)[0])
        assert runner.transcribe(feats) == text
    assert runner.log_probs(np.zeros((3, 80), np.float32)).shape == (0, 29)


@pytest.mark.parametrize(
    "chunk_size, left_chunks, head_copies",
    [(4, 1, True), (4, 4, True), (8, 1, True), (8, 4, True), (8, 4, False)],
)
def test_streaming_graph_matches_forward_chunk_and_flush(
    tmp_path, student, monkeypatch, chunk_size, left_chunks, head_copies
):
    if not head_copies:  # the attention layout of larger models (StepSpec.head_copies)
        monkeypatch.setattr("asr_kd.models.streaming._HEAD_COPIES_MAX_MACS", -1)
    assert student.model.step_spec(chunk_size, left_chunks).head_copies == head_copies
    path = export_step(student, tmp_path / "step.onnx", chunk_size, left_chunks)
    runner = OnnxStreamingCTC(path)
    decoder = OnnxStreamingDecoder(OnnxStreamingCTC(path))
    # 13 frames: 3 encoder frames, shorter than one chunk (flush only); 403 frames: the
    # attention cache fills and slides; odd pieces cut chunks and subsampling windows anywhere.
    # No reset between utterances: flush() ends one and must leave the runner fresh.
    for frames, piece in ((13, 5), (403, 37), (97, 3), (250, 250)):
        feats = random_feats(student, frames, seed=frames + piece)
        pieces = [min(piece, frames - s) for s in range(0, frames, piece)]
        ref = torch_stream(student, feats, pieces, chunk_size, left_chunks)
        got = [runner.accept(feats[s : s + piece].numpy()) for s in range(0, frames, piece)]
        got = np.concatenate([*got, runner.flush()])
        assert got.shape == ref.shape == (frames // 4, 29)
        assert np.abs(got - ref).max() < 1e-4, (frames, piece)
        torch_decoder = StreamingGreedyDecoder(
            student.model, student.tokenizer, chunk_size, left_chunks
        )
        decoder.reset()  # one decoder and session for several utterances
        for s in range(0, frames, piece):
            partial = decoder.accept(feats[s : s + piece])
            assert partial == torch_decoder.accept(feats[s : s + piece])
        assert decoder.finalize() == torch_decoder.finalize()


def test_step_export_needs_a_finite_cache_and_a_streaming_model(tmp_path, tiny, student):
    with pytest.raises(ValueError, match="left_chunks=-1"):
        export_step(student, tmp_path / "s.onnx", 8, -1)
    with pytest.raises(ValueError, match="full-context"):
        export_step(tiny_loaded(tiny, streaming=False), tmp_path / "t.onnx", 8, 2)


def test_metadata_is_enough_to_run(tmp_path, student):
    paths = export_checkpoint(student, tmp_path, chunk_sizes=[4], left_chunks=None)
    assert sorted(p.name for p in paths.values()) == ["full.onnx", step_file_name(4, 2)]
    meta = read_metadata(paths["stream-c4"])
    assert (meta["chunk_size"], meta["left_chunks"], meta["frame_shift_ms"]) == (4, 2, 40)
    assert meta["input_shapes"]["k_cache_0"] == [8, 32] and meta["kind"] == "step"
    assert Tokenizer.from_dict(meta["tokenizer"]).fingerprint == student.tokenizer.fingerprint


def test_export_cli_writes_checked_graphs(tmp_path, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    out = tmp_path / "onnx"
    summary = run(compose("export", [f"ckpt={ckpt}", f"out_dir={out}", "chunk_sizes_ms=[160]"]))
    assert set(summary) == {"full", "stream-c4"}
    for s in summary.values():
        assert Path(s["path"]).is_file() and s["max_abs_diff"] < 1e-4 and s["nodes"] > 10
        onnx.checker.check_model(s["path"])
    assert json.loads((out / "export.json").read_text()) == summary
    with pytest.raises(RuntimeError, match="tolerance"):
        run(compose("export", [f"ckpt={ckpt}", f"out_dir={out}", "tolerance=-1.0"]))
    with pytest.raises(ValueError, match="multiple"):
        run(compose("export", [f"ckpt={ckpt}", f"out_dir={out}", "chunk_sizes_ms=[100]"]))
    bare = run(
        compose("export", [f"ckpt={ckpt}", f"out_dir={tmp_path / 'b'}", "chunk_sizes_ms=160"])
    )
    assert set(bare) == {"full", "stream-c4"}  # a bare value is a list of one (was a TypeError)
    refused = tmp_path / "refused"
    with pytest.raises(ValueError, match="left_chunks=-1"):
        run(compose("export", [f"ckpt={ckpt}", f"out_dir={refused}", "left_chunks=-1"]))
    assert not list(refused.glob("*.onnx"))  # refused before full.onnx was written


def test_export_rejects_a_nan_difference(tmp_path, make_checkpoint, monkeypatch):
    """NaN log-probs (a diverged checkpoint) make the diff NaN, and NaN > tol is False."""
    ckpt = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    monkeypatch.setattr(
        "asr_kd.export.onnx.check_export", lambda loaded, paths: dict.fromkeys(paths, float("nan"))
    )
    with pytest.raises(RuntimeError, match="nan"):
        run(compose("export", [f"ckpt={ckpt}", f"out_dir={tmp_path / 'onnx'}"]))


def test_evaluate_onnx_runtime_decodes_like_torch(tmp_path, prepared_data_dir, make_checkpoint):
    teacher = make_checkpoint(tmp_path / "teacher.ckpt", streaming=False)
    student = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    results = {}
    for runtime in ("torch", "onnx"):
        overrides = evaluate_overrides(
            prepared_data_dir, tmp_path / runtime, teacher, student, runtime
        )
        results[runtime] = evaluate(compose("evaluate", overrides))
    onnx_rows = results["onnx"]["rows"]
    assert [r["runtime"] for r in onnx_rows] == ["onnx"] * 3
    assert [(r["model"], r["mode"]) for r in onnx_rows] == [
        ("teacher", "full"),
        ("student_kd", "full"),
        ("student_kd", "stream-160ms"),
    ]
    assert (tmp_path / "onnx" / "onnx" / "student_kd" / step_file_name(4, 2)).is_file()
    for t, o in zip(results["torch"]["rows"], onnx_rows, strict=True):
        assert t["runtime"] == "torch" and o["rtf"] > 0
        assert (o["wer"], o["cer"]) == (t["wer"], t["cer"])
        hyps = [f"{row['model']}.test.{row['mode']}.tsv" for row in (t, o)]
        assert (tmp_path / "torch" / "hyps" / hyps[0]).read_text() == (
            tmp_path / "onnx" / "hyps" / hyps[1]
        ).read_text()
    assert (
        max(max(d.values()) for d in results["onnx"]["meta"]["onnx_max_abs_diff"].values()) < 1e-4
    )
    assert "ONNX Runtime" in (tmp_path / "onnx" / "results.md").read_text()
