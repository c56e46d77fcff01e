"""The backends of asr-kd-evaluate: one per runtime in a table, each a Backend giving rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr_kd.config import compose
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.evaluation.backends import BACKENDS, Backend
from asr_kd.evaluation.backends.base import scored_row
from asr_kd.evaluation.rows import ResultRow
from asr_kd.evaluation.run import evaluate
from asr_kd.evaluation.settings import EvalSettings
from asr_kd.inference.timing import Decoded
from asr_kd.models.hf import HFCTCModel, HFLoaded
from asr_kd.models.loading import LoadedModel

# The fields of a full-context torch row that do not come from decoding.
FIGURES = dict(runtime="torch", quantize="none", batch_size=1, threads=1, params=10)
FIGURES.update(macs_per_audio_s=1e6, model_mb=0.1, latency_ms=None, graph_mb=None)
FIGURES.update(dict.fromkeys(("rtf_batch", "chunk_ms", "left_chunks", "threads_batch")))


def test_one_backend_per_runtime_in_the_table():
    assert set(BACKENDS) == {"torch", "onnx", "sherpa-onnx", "sherpa-onnx-hlg", "transformers"}
    settings = EvalSettings.from_config(compose("evaluate", ["data.dir=x", "ckpt.teacher=t.ckpt"]))
    ours = LoadedModel(None, Tokenizer.char(), {}, "student", Path("<s>"))
    theirs = HFLoaded.__new__(HFLoaded)  # what load_model gives for hf:...: a model of audio
    object.__setattr__(theirs, "model", HFCTCModel.__new__(HFCTCModel))
    for name, kind in BACKENDS.items():
        assert issubclass(kind, Backend) and kind.name == name
        backend = kind(settings, corpus=None)
        transformers = name == "transformers"
        assert (backend.runs(ours), backend.runs(theirs)) == (not transformers, transformers)
        assert kind.reads_source("hf:facebook/wav2vec2-base-960h") == transformers
        assert not kind.reads_source("exp/teacher/checkpoints/last.ckpt")


def test_cost_per_audio_hour_of_a_known_row():
    """Regression pin: a row's CPU-seconds per audio hour is its CPU-seconds scaled from the
    decoded audio seconds to one hour (1.8 CPU s over 3.6 s of audio -> 1800), not per second."""
    decoded = Decoded(
        hyps={"u1": "A B"},
        refs={"u1": "A C"},
        seconds=0.9,
        audio_s=3.6,
        cpu_seconds=1.8,
        joules=7.2,
        energy_note=None,
    )
    row = scored_row("student_kd", "test", "full", decoded, decoded, **FIGURES).to_dict()
    assert row["cpu_s_per_audio_h"] == pytest.approx(1800.0)
    assert row["joules_per_audio_h"] == pytest.approx(7200.0)
    assert row["rtf"] == pytest.approx(0.25) and row["audio_s"] == 3.6
    assert (row["wer"], row["sub"], row["num_utts"], row["ref_words"]) == (50.0, 50.0, 1, 2)


def test_a_new_backend_is_one_entry_in_the_table(
    tmp_path, prepared_data_dir, make_checkpoint, monkeypatch
):
    """The run asks a backend which models it runs and for its rows, and writes those rows."""

    class Constant(Backend):
        name = "torch"

        def runs(self, loaded) -> bool:
            return isinstance(loaded, LoadedModel)

        def rows(self, name, loaded, subset):
            decoded = Decoded({"u": "A"}, {"u": "A"}, seconds=1.0, audio_s=2.0, cpu_seconds=1.0)
            return [self.row(decoded, decoded, model=name, subset=subset, mode="x", **FIGURES)]

    monkeypatch.setitem(BACKENDS, "torch", Constant)
    student = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    overrides = [f"data.dir={prepared_data_dir}", f"out_dir={tmp_path / 'out'}", "plots=false"]
    cfg = compose("evaluate", [*overrides, f"ckpt.student_kd={student}", "runtime=torch"])
    (row,) = evaluate(cfg)["rows"]
    assert ResultRow.from_dict(row).mode == "x" and row["rtf"] == 0.5
    assert "| student_kd | x | 0.00 |" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "hyps" / "student_kd.test.x.tsv").read_text().endswith("u\tA\tA\n")
