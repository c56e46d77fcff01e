"""asr-kd-synth: LibriSpeech layout, disjoint speakers, byte-identical output per seed."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import soundfile as sf

from asr_kd.config import compose
from asr_kd.data import synthetic

UTT_PATH = re.compile(r"(\d+)/(\d+)/(\1)-(\2)-(\d{4})\.flac")


def _speakers(root: Path, subset: str) -> set[str]:
    return {p.name for p in (root / subset).iterdir() if p.is_dir()}


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_is_librispeech(tiny_corpus_dir):
    for subset in ("train", "dev", "test"):
        flacs = sorted((tiny_corpus_dir / subset).rglob("*.flac"))
        assert flacs, subset
        transcribed = {}
        for trans in (tiny_corpus_dir / subset).rglob("*.trans.txt"):
            speaker, chapter = trans.parent.parent.name, trans.parent.name
            assert trans.name == f"{speaker}-{chapter}.trans.txt"
            for line in trans.read_text().splitlines():
                utt_id, text = line.split(" ", 1)
                assert re.fullmatch(r"[A-Z' ]+", text) and text == text.strip(), line
                transcribed[utt_id] = text
        for flac in flacs:
            rel = flac.relative_to(tiny_corpus_dir / subset).as_posix()
            assert UTT_PATH.fullmatch(rel), rel
            info = sf.info(str(flac))
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert info.frames > 0
        assert set(transcribed) == {f.stem for f in flacs}


def test_subsets_have_disjoint_speakers_and_the_asked_duration(tiny_corpus_dir):
    train, dev, test = (_speakers(tiny_corpus_dir, s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (4, 2, 2)
    assert not train & dev and not train & test and not dev & test
    seconds = sum(sf.info(str(f)).duration for f in (tiny_corpus_dir / "train").rglob("*.flac"))
    assert 0.011 * 3600 <= seconds < 0.011 * 3600 + 10  # stops after reaching the target
    names = {}
    for line in (tiny_corpus_dir / "SPEAKERS.TXT").read_text().splitlines()[1:]:
        fields = [f.strip() for f in line.split("|")]
        names[fields[0]] = (fields[2], fields[4])
    voices = {s: {v for k, (sub, v) in names.items() if sub == s} for s in ("train", "test")}
    assert not voices["train"] & voices["test"]  # accent+variant+pitch+rate differ


def _synth(out: Path, *overrides: str) -> Path:
    cfg = compose(
        "synth",
        [
            f"out_dir={out}",
            "hours.train=0.003",
            "hours.dev=0.001",
            "hours.test=0",
            "speakers.train=3",
            "speakers.dev=1",
            "noise_prob=1.0",
            "reverb_prob=0.5",
            *overrides,
        ],
    )
    summary = synthetic.run(cfg)
    root = out / "LibriSpeech"
    on_disk = sum(sf.info(str(f)).frames for f in root.rglob("*.flac")) / 16000
    assert summary["total_seconds"] == pytest.approx(on_disk)
    return root


@pytest.mark.parametrize("text", ["sentences", "words"])
def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path, text):
    a = _digest(_synth(tmp_path / "a", "num_workers=1", f"text={text}"))
    b = _digest(_synth(tmp_path / "b", "num_workers=2", f"text={text}"))
    c = _digest(_synth(tmp_path / "c", "seed=1", f"text={text}"))
    assert a == b
    assert a != c
    assert not (tmp_path / "a" / "LibriSpeech" / "test").exists()  # hours=0: no subset


def test_refuses_to_overwrite_a_corpus_it_did_not_write(tmp_path):
    (tmp_path / "LibriSpeech" / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not written by asr-kd-synth"):
        _synth(tmp_path)


def test_too_many_speakers_is_a_clear_error():
    settings = synthetic.SynthSettings(
        hours={"train": 1.0}, speakers={"train": 5}, accents=("en",), variants=("m1", "f1")
    )
    with pytest.raises(ValueError, match="only 2"):
        synthetic.assign_speakers(settings)


def test_vocabulary_is_words_of_the_alphabet_with_probabilities():
    words, probs = synthetic.build_vocabulary(300, freq_power=0.7)
    assert len(words) == len(set(words)) == 300
    assert all(re.fullmatch(r"[a-z']+", w) for w in words) and "it's" in words
    assert probs.sum() == pytest.approx(1.0) and probs[0] == probs.max()


LIBRISPEECH_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean",
                       "dev-other", "test-clean", "test-other")  # fmt: skip


def test_corpus_librispeech_writes_the_seven_subsets_with_speakers_disjoint_across_them(tmp_path):
    """``corpus=librispeech`` replaces the demo's subsets (no train/dev/test beside them)."""
    hours = [f"hours.{subset}=0.002" for subset in LIBRISPEECH_SUBSETS]
    cfg = compose("synth", [f"out_dir={tmp_path}", "corpus=librispeech", "num_workers=1", *hours])
    summary = synthetic.run(cfg)
    root = tmp_path / "LibriSpeech"
    assert tuple(summary["subsets"]) == LIBRISPEECH_SUBSETS
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(LIBRISPEECH_SUBSETS)
    speakers = [_speakers(root, subset) for subset in LIBRISPEECH_SUBSETS]
    assert all(speakers) and sum(map(len, speakers)) == len(set().union(*speakers))
    assert cfg.speakers["train-other-500"] == 160 and sum(cfg.speakers.values()) == 400
