"""recipes/librispeech/run.sh for real on its own LibriSpeech-shaped synthetic corpus (SYNTH=yes,
stage 0), every stage, tiny models (slow); tests/test_recipe.py has its fake-command tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asr_kd.evaluation.report import load_results
from tests.test_recipe import LIBRI, LIBRI_SUBSETS

# The seven subsets at a few utterances each (the preset's speakers, disjoint per subset).
TINY_CORPUS = [f"synth:hours.{subset}=0.004" for subset in LIBRI_SUBSETS] + ["synth:num_workers=1"]
# Two-layer models of the demo's widths' eighth: every stage in seconds.
TINY_MODELS = [
    "train:model.d_model=32",
    "train:model.num_layers=2",
    "train:model.num_heads=2",
    "train:model.ff_dim=64",
    "train:model.subsampling_channels=8",
    "train:data.num_workers=0",
    "train:trainer.val_check_interval=10",
    "train:checkpoint.every_n_steps=10",
    "train:trainer.enable_progress_bar=false",
    "eval:rtf.warmup_utts=1",
]
TINY_KNOBS = {
    "SYNTH": "yes",
    "TRAINER": "cpu",
    "TEACHER_MODEL": "teacher_small",
    "STUDENT_MODEL": "student_tiny",
    "TEACHER_STEPS": "20",
    "STUDENT_STEPS": "20",
    "WARMUP_STEPS": "2",
    "AVG": "2",
    "AVG_EVERY": "5",
    "BPE_SIZE": "60",
    "PREPARE_JOBS": "1",
    "HIDDEN_STUDENT_LAYERS": "1,2",
    "HIDDEN_TEACHER_LAYERS": "1,2",
    "HIDDEN_COMPRESS": "pca4",
    "CHUNK_MS": "320",
}


def _table_rows(results_md: Path) -> set[tuple[str, str, str]]:
    """(model, mode, subset) of every row of results.md (a ``## <subset>`` section each); the
    model without the notes its cell adds (``student_kd (beam_lm)``)."""
    rows, subset = set(), None
    for line in results_md.read_text().splitlines():
        if line.startswith("## "):
            subset = line[3:].split(" (")[0]
        elif line.startswith("| ") and subset and not line.startswith(("| Model", "|---")):
            model, mode = (cell.strip() for cell in line.split("|")[1:3])
            rows.add((model.split(" (")[0], mode, subset))
    return rows


@pytest.mark.slow
def test_librispeech_recipe_runs_every_stage_on_a_librispeech_shaped_corpus(tmp_path):
    """Stages 0-7 with the recipe's defaults (DISTILL=hidden, a pca store, AVG, streaming dev
    WER on both dev subsets), tiny: results.md has every model, mode and subset. Regression:
    stage 3 dumped no teacher layers, so DISTILL=hidden failed at stage 4 after the dump."""
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "asr-kd-synth").exists():
        pytest.skip(f"console scripts not installed beside {sys.executable}")
    exp = tmp_path / "exp"
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ['PATH']}", EXP=str(exp), **TINY_KNOBS)
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(LIBRI), *TINY_CORPUS, *TINY_MODELS],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    print(f"stages 0-7: {time.perf_counter() - start:.0f} s")
    rows = {
        (r["model"], r["mode"], r["subset"])
        for r in load_results(exp / "report" / "results.json")["rows"]
    }
    subsets = ["test-clean", "test-other", "dev-clean", "dev-other"]
    modes = {"teacher": ["full", "full-beam_lm"]}
    modes["student_kd"] = modes["student_ctc"] = [
        "full", "stream-320ms", "full-beam_lm", "stream-320ms-beam_lm",
        "stream-320ms-sherpa-onnx-hlg",
    ]  # fmt: skip
    assert rows == {(m, mode, s) for m, ms in modes.items() for mode in ms for s in subsets}
    assert (exp / "lm" / "3gram.arpa").is_file() and (exp / "lm" / "HLG.fst").is_file()
    assert _table_rows(exp / "report" / "results.md") == rows
    for name in ("teacher", "student_kd", "student_ctc"):
        assert (exp / name / "checkpoints" / "averaged.ckpt").is_file()
    metrics = (exp / "student_kd" / "logs" / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val/dev-clean/wer" in metrics and "val/dev-other/wer" in metrics
