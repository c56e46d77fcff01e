"""``asr-kd-prepare tokenizer=from_teacher``: the teacher's vocabulary becomes the data dir's
tokenizer, and a transcript the teacher cannot spell is dropped and counted, not crashed on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from asr_kd.config import compose
from asr_kd.data import prepare
from asr_kd.data.teacher_vocab import teacher_vocab
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError

TEXTS = ["THE CAT SAT ON THE MAT", "IT'S A DOG", "WE ARE HERE"]  # the second has an apostrophe


def _corpus(tiny_corpus_dir: Path, root: Path) -> Path:
    """Three utterances of the tiny corpus under new transcripts, as subset ``train``."""
    flacs = sorted((tiny_corpus_dir / "train").rglob("*.flac"))[:3]
    chapter = root / "LibriSpeech" / "train" / "7" / "70"
    chapter.mkdir(parents=True)
    lines = []
    for n, (flac, text) in enumerate(zip(flacs, TEXTS, strict=True)):
        shutil.copy(flac, chapter / f"7-70-{n:04d}.flac")
        lines.append(f"7-70-{n:04d} {text}")
    (chapter / "7-70.trans.txt").write_text("\n".join(lines) + "\n")
    return root / "LibriSpeech"


def test_unspellable_transcripts_are_counted_and_the_tokenizer_is_the_teachers(
    tmp_path, tiny_corpus_dir, hf_model_dir
):
    teacher = f"hf:{hf_model_dir('hubert')}"  # its vocabulary has no apostrophe
    corpus = _corpus(tiny_corpus_dir, tmp_path / "corpus")
    out = tmp_path / "data"
    result = prepare.run(
        compose(
            "prepare",
            [
                f"corpus_dir={corpus}",
                f"out_dir={out}",
                "subsets=[train]",
                "num_jobs=1",
                "tokenizer=from_teacher",
                f"tokenizer.teacher={teacher}",
                "ctc_frame_shift_ms=10",
            ],
        )  # fmt: skip
    )
    train = result["subsets"]["train"]
    assert train["reasons"]["unspellable_by_teacher"]["count"] == 1
    assert "7-70-0001" in train["reasons"]["unspellable_by_teacher"]["examples"][0]
    assert train["utterances"] == 2 and train["skipped"] == 1
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["subsets"]["train"]["reasons"]["unspellable_by_teacher"]["count"] == 1
    assert Tokenizer.load(out / "lang") == teacher_vocab(teacher).tokenizer


def test_from_teacher_without_a_teacher_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.teacher=hf:"):
        prepare.prepare(tmp_path, ["train"], tmp_path / "out", tokenizer_kind="from_teacher")
