"""asr-kd-prepare on a hand-made LibriSpeech-layout corpus with every kind of defect."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet

from asr_kd.config import compose
from asr_kd.data import prepare
from asr_kd.data.features import FBANK_DIM, compute_fbank, load_audio
from asr_kd.errors import ConfigError

TRAIN, DEV = "train-clean-100", "dev-clean"


def _flac(path: Path, seconds: float = 1.5, rate: int = 16000, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
    sf.write(path, samples, rate, format="FLAC", subtype="PCM_16")


def _chapter(root: Path, subset: str, speaker: str, chapter: str, lines: list[str]) -> Path:
    folder = root / subset / speaker / chapter
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "LibriSpeech"
    a = _chapter(
        root,
        TRAIN,
        "19",
        "198",
        [
            "19-198-0000 IT'S A FINE DAY",
            "19-198-0001 it\u2019s  a   lower case",
            "19-198-0002",
            "19-198-0003 THE AUDIO FILE IS MISSING",
            "19-198-0004 THIS ONE IS BROKEN",
        ],
    )
    _flac(a / "19-198-0000.flac", seed=1)
    _flac(a / "19-198-0001.flac", seed=2)
    _flac(a / "19-198-0002.flac", seed=3)
    (a / "19-198-0004.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)  # corrupt
    b = _chapter(
        root,
        TRAIN,
        "19",
        "227",
        [
            "19-227-0000 RECORDED AT TWENTY TWO KILOHERTZ",
            "19-227-0001 NUMBERS LIKE 42 ARE NOT WORDS",
            "19-227-0002 THIS TRANSCRIPT IS FAR TOO LONG FOR SUCH A SHORT CLIP",
            "19-227-0003 NO SAMPLES",
        ],
    )
    _flac(b / "19-227-0000.flac", rate=22050, seed=4)
    _flac(b / "19-227-0001.flac", seed=5)
    _flac(b / "19-227-0002.flac", seconds=0.5, seed=6)
    sf.write(b / "19-227-0003.flac", np.zeros(0, np.float32), 16000, format="FLAC")
    _flac(b / "19-227-0009.flac", seed=7)  # audio without a transcript line
    c = _chapter(root, TRAIN, "26", "495", ["26-495-0000 ANOTHER SPEAKER", "26-495-0001 AND AGAIN"])
    _flac(c / "26-495-0000.flac", seed=8)
    _flac(c / "26-495-0001.flac", seed=9)
    d = _chapter(root, DEV, "84", "121123", ["84-121123-0000 DEV ONE", "84-121123-0001 DEV TWO"])
    _flac(d / "84-121123-0000.flac", seed=10)
    _flac(d / "84-121123-0001.flac", seed=11)
    return root


def _prepare(corpus: Path, out: Path, *overrides: str) -> dict:
    cfg = compose(
        "prepare",
        [f"corpus_dir={corpus}", f"out_dir={out}", f"subsets=[{TRAIN},{DEV}]", *overrides],
    )
    return prepare.run(cfg)


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("data")
    return out, _prepare(corpus, out, "tokenizer=char")


def test_good_utterances_are_kept_with_normalised_text(prepared):
    out, report = prepared
    cuts = CutSet.from_file(out / f"cuts_{TRAIN}.jsonl.gz")
    texts = {c.id: c.supervisions[0].text for c in cuts}
    assert texts == {
        "19-198-0000": "IT'S A FINE DAY",
        "19-198-0001": "IT'S A LOWER CASE",
        "19-227-0000": "RECORDED AT TWENTY TWO KILOHERTZ",
        "26-495-0000": "ANOTHER SPEAKER",
        "26-495-0001": "AND AGAIN",
    }
    assert {c.supervisions[0].speaker for c in cuts} == {"19", "26"}
    dev = CutSet.from_file(out / f"cuts_{DEV}.jsonl.gz")
    assert sorted(c.id for c in dev) == ["84-121123-0000", "84-121123-0001"]
    assert report["train_subsets"] == [TRAIN]
    assert report["subsets"][TRAIN]["utterances"] == 5
    assert report["subsets"][DEV] == {
        "utterances": 2,
        "speakers": 1,
        "hours": pytest.approx(3.0 / 3600, abs=1e-4),
        "skipped": 0,
        "reasons": {},
    }


def test_every_defect_is_counted_with_its_file(prepared):
    out, report = prepared
    reasons = report["subsets"][TRAIN]["reasons"]
    counts = {reason: entry["count"] for reason, entry in reasons.items()}
    assert counts == {
        "empty_transcript": 1,
        "missing_audio": 1,
        "outside_alphabet": 1,
        "resampled": 1,
        "too_short_for_ctc": 1,
        "unreadable_audio": 1,
        "untranscribed_audio": 1,
        "zero_length_audio": 1,
    }
    assert report["subsets"][TRAIN]["skipped"] == 7  # resampled audio is kept
    examples = {reason: " ".join(entry["examples"]) for reason, entry in reasons.items()}
    assert "19-198-0002.flac" in examples["empty_transcript"]
    assert "19-198-0003" in examples["missing_audio"]
    assert "19-198-0004.flac" in examples["unreadable_audio"]
    assert (
        "19-227-0001.flac" in examples["outside_alphabet"]
        and "'24'" in examples["outside_alphabet"]
    )
    assert "19-227-0002" in examples["too_short_for_ctc"]
    assert "19-227-0003.flac" in examples["zero_length_audio"]
    assert "19-227-0009.flac" in examples["untranscribed_audio"]
    assert "22050 Hz" in examples["resampled"]
    assert json.loads((out / "prepare_report.json").read_text()) == report


def test_resampled_audio_has_16k_features_equal_to_compute_fbank(prepared, corpus):
    out, _ = prepared
    cuts = CutSet.from_file(out / f"cuts_{TRAIN}.jsonl.gz")
    cut = cuts.to_eager()["19-227-0000"]
    assert cut.sampling_rate == 16000 and cut.recording.num_samples == 24000
    stored = torch.from_numpy(cut.load_features())
    samples, rate = load_audio(corpus / TRAIN / "19" / "227" / "19-227-0000.flac")
    assert rate == 22050
    fresh = compute_fbank(samples, rate)
    assert stored.shape == fresh.shape == (150, FBANK_DIM)
    assert torch.allclose(stored, fresh, atol=0.05)  # lilcom compression only


def test_tokenizer_and_cmvn_come_from_train(prepared):
    out, report = prepared
    assert report["tokenizer"]["kind"] == "char" and report["tokenizer"]["vocab_size"] == 29
    cmvn = json.loads((out / "cmvn.json").read_text())
    assert len(cmvn["mean"]) == len(cmvn["std"]) == FBANK_DIM and min(cmvn["std"]) > 0
    train = CutSet.from_file(out / f"cuts_{TRAIN}.jsonl.gz")
    assert cmvn["num_frames"] == sum(c.num_frames for c in train)
    feats = np.concatenate([c.load_features() for c in train])
    np.testing.assert_allclose(cmvn["mean"], feats.mean(axis=0), rtol=1e-4, atol=1e-4)


def test_untranscribed_subset_keeps_empty_text_and_bpe_is_saved(corpus, tmp_path):
    with pytest.warns(UserWarning, match=r"vocab_size=500 asked, but .* fills only \d+ ids"):
        report = _prepare(
            corpus,
            tmp_path,
            f"untranscribed_subsets=[{DEV}]",
            "tokenizer=bpe",
            "tokenizer.vocab_size=500",
        )
    dev = CutSet.from_file(tmp_path / f"cuts_{DEV}.jsonl.gz")
    assert [c.supervisions[0].text for c in dev] == ["", ""]
    assert report["tokenizer"]["kind"] == "bpe" and report["tokenizer"]["vocab_size"] < 500
    assert (tmp_path / "lang" / "bpe.model").is_file()


def test_missing_or_empty_subset_is_an_error_naming_the_path(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="test-other"):
        _prepare(
            corpus.parent,
            tmp_path,
            f"corpus_dir={corpus}",
            "subsets=[test-other,dev-clean]",
            "train_subsets=[dev-clean]",
        )
    (corpus / "train-other-500").mkdir()
    with pytest.raises(ValueError, match="train-other-500.* is empty"):
        _prepare(corpus, tmp_path, "subsets=[train-other-500]")
    with pytest.raises(ValueError, match="no subset name containing 'train'"):
        _prepare(corpus, tmp_path, f"subsets=[{DEV}]")


def test_ctc_frames_needed_counts_repeats():
    assert prepare.ctc_frames_needed([5, 5, 6]) == 4
    assert prepare.ctc_frames_needed([1, 2, 3]) == 3
    assert prepare.ctc_frames_needed([]) == 0


def test_every_transcribed_train_subset_feeds_the_tokenizer_by_default():
    """Regression: only the first "train" subset was used (train-clean-360 silently ignored)."""
    from asr_kd.data.prepare import _default_train_subsets

    subsets = ["train-clean-100", "train-clean-360", "dev-clean", "train-other-500"]
    assert _default_train_subsets(subsets, ["train-other-500"]) == [
        "train-clean-100",
        "train-clean-360",
    ]
    with pytest.raises(ValueError, match="train_subsets"):
        _default_train_subsets(["dev-clean", "test-clean"], [])


def test_num_jobs_splits_the_feature_extraction(corpus, tmp_path):
    """Regression: fbank extraction, the longest part on LibriSpeech, always ran as 2 jobs
    whatever ``num_jobs`` said (lhotse writes one storage file per job)."""
    _prepare(corpus, tmp_path, "tokenizer=char", "num_jobs=3")
    feats = sorted(p.name for p in (tmp_path / "feats" / TRAIN).iterdir())
    assert feats == ["feats-0.lca", "feats-1.lca", "feats-2.lca"]
    assert len(CutSet.from_file(tmp_path / f"cuts_{TRAIN}.jsonl.gz")) == 5


def test_stereo_audio_is_skipped_as_not_mono_and_the_ctc_length_boundary_is_exact(tmp_path):
    """``not_mono`` for a 2-channel file; ``too_short_for_ctc`` keeps a clip whose 40 ms output
    frames are exactly what its text needs and drops the one a sample shorter.

    "ALL" needs 4 frames (A, L, blank, L): 160 ms = 2560 samples gives 4, 2559 samples 3.
    """
    root = tmp_path / "LibriSpeech"
    folder = _chapter(
        root,
        TRAIN,
        "7",
        "70",
        [
            "7-70-0000 A GOOD ONE",
            "7-70-0001 RECORDED IN STEREO",
            "7-70-0002 ALL",
            "7-70-0003 ALL",
        ],
    )
    _flac(folder / "7-70-0000.flac", seed=20)
    rng = np.random.default_rng(21)
    stereo = (0.1 * rng.standard_normal((24000, 2))).astype(np.float32)
    sf.write(folder / "7-70-0001.flac", stereo, 16000, format="FLAC", subtype="PCM_16")
    _flac(folder / "7-70-0002.flac", seconds=2560 / 16000, seed=22)
    _flac(folder / "7-70-0003.flac", seconds=2559 / 16000, seed=23)
    assert sf.info(folder / "7-70-0001.flac").channels == 2
    assert sf.info(folder / "7-70-0002.flac").frames == 2560
    assert sf.info(folder / "7-70-0003.flac").frames == 2559

    out = tmp_path / "data"
    report = _prepare(root, out, f"subsets=[{TRAIN}]", "tokenizer=char", "ctc_frame_shift_ms=40")
    cuts = CutSet.from_file(out / f"cuts_{TRAIN}.jsonl.gz")
    assert sorted(c.id for c in cuts) == ["7-70-0000", "7-70-0002"]
    reasons = report["subsets"][TRAIN]["reasons"]
    assert reasons == {
        "not_mono": {"count": 1, "examples": [f"{TRAIN}/7/70/7-70-0001.flac (2 channels)"]},
        "too_short_for_ctc": {"count": 1, "examples": ["7-70-0003 (3 frames < 4 needed)"]},
    }
    assert report["subsets"][TRAIN]["skipped"] == 2


def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_a_killed_prepare_keeps_finished_subsets_and_redoes_the_others(
    corpus, prepared, tmp_path, monkeypatch
):
    """Killed while extracting dev (its partial features on disk): the rerun keeps train's
    features untouched, redoes dev, and writes the report and CMVN of an uninterrupted run."""
    real = prepare.extract_features

    def killed_on_dev(pool, cuts, storage, desc, **kwargs):
        if DEV in desc:
            storage.mkdir(parents=True)
            (storage / "feats-0.lca").write_bytes(b"half written")
            raise KeyboardInterrupt
        return real(pool, cuts, storage, desc, **kwargs)

    out = tmp_path / "data"
    monkeypatch.setattr(prepare, "extract_features", killed_on_dev)
    with pytest.raises(KeyboardInterrupt):
        _prepare(corpus, out, "tokenizer=char")
    monkeypatch.undo()
    assert (out / f"prepared_{TRAIN}.json").is_file()
    assert not (out / f"prepared_{DEV}.json").exists()
    train_stamps = _stamps(out / "feats" / TRAIN)

    report = _prepare(corpus, out, "tokenizer=char")
    assert _stamps(out / "feats" / TRAIN) == train_stamps
    assert (out / f"prepared_{DEV}.json").is_file()
    dev = CutSet.from_file(out / f"cuts_{DEV}.jsonl.gz")
    assert all(c.load_features().shape[1] == FBANK_DIM for c in dev)
    first_out, first = prepared
    assert {**report, "out_dir": None} == {**first, "out_dir": None}
    assert (out / "cmvn.json").read_bytes() == (first_out / "cmvn.json").read_bytes()

    dev_stamps = _stamps(out / "feats" / DEV)
    assert _prepare(corpus, out, "tokenizer=char") == report  # all finished: nothing redone
    assert _stamps(out / "feats" / DEV) == dev_stamps


def test_a_truncated_flac_is_counted_as_unreadable_audio_also_when_its_subset_is_kept(tmp_path):
    """Its header is whole, so the probe passes it; the fbank extraction fails to decode it and
    counts it, with its name, as a header that does not read is. A rerun that keeps the subset
    reports it again (the count lives in the subset's marker)."""
    root = tmp_path / "LibriSpeech"
    folder = _chapter(root, TRAIN, "7", "70", [f"7-70-000{n} A GOOD ONE" for n in range(3)])
    _flac(folder / "7-70-0000.flac", seed=30)
    _flac(folder / "7-70-0001.flac", seconds=3.0, seed=31)
    _flac(folder / "7-70-0002.flac", seed=32)
    data = (folder / "7-70-0001.flac").read_bytes()
    (folder / "7-70-0001.flac").write_bytes(data[: len(data) // 3])
    assert sf.info(folder / "7-70-0001.flac").frames == 48000

    out = tmp_path / "data"
    report = _prepare(root, out, f"subsets=[{TRAIN}]", "tokenizer=char")
    row = report["subsets"][TRAIN]
    assert row["utterances"] == 2 and row["skipped"] == 1
    (example,) = row["reasons"]["unreadable_audio"]["examples"]
    assert example.startswith(f"{TRAIN}/7/70/7-70-0001.flac: cannot decode audio")
    recordings = [json.loads(line) for line in _gz_lines(out / f"recordings_{TRAIN}.jsonl.gz")]
    assert [r["id"] for r in recordings] == ["7-70-0000", "7-70-0002"]
    assert _prepare(root, out, f"subsets=[{TRAIN}]", "tokenizer=char") == report


def _gz_lines(path: Path) -> list[str]:
    import gzip

    return gzip.open(path, "rt").read().splitlines()


def test_num_jobs_below_one_is_a_config_error(corpus, tmp_path):
    with pytest.raises(ConfigError, match="num_jobs=0"):
        _prepare(corpus, tmp_path, "num_jobs=0")


@pytest.fixture(scope="module")
def prepared_sp(corpus, tmp_path_factory) -> tuple[Path, dict]:
    """:func:`prepared` with speed-perturbed copies of the train cuts at 0.9 and 1.1."""
    out = tmp_path_factory.mktemp("data_sp")
    return out, _prepare(corpus, out, "tokenizer=char", "speed_perturb=[0.9,1.1]")


def test_speed_perturb_adds_copies_of_the_train_cuts_with_their_own_features(prepared, prepared_sp):
    """Each train cut gets a 0.9 and a 1.1 copy (icefall's ids, their own scaled fbank and the
    same text); dev gets none; CMVN and the counted utterances are those of a prepare without
    copies, byte for byte."""
    (plain_out, plain), (out, report) = prepared, prepared_sp
    originals = {c.id: c for c in CutSet.from_file(plain_out / f"cuts_{TRAIN}.jsonl.gz")}
    cuts = {c.id: c for c in CutSet.from_file(out / f"cuts_{TRAIN}.jsonl.gz")}
    assert sorted(cuts) == sorted(f"{i}{s}" for i in originals for s in ("", "_sp0.9", "_sp1.1"))
    for cut_id, original in originals.items():
        for factor in (0.9, 1.1):
            copy = cuts[f"{cut_id}_sp{factor}"]
            assert copy.supervisions[0].text == original.supervisions[0].text
            frames = copy.load_features().shape[0]
            assert abs(frames - original.num_frames / factor) <= 2
        np.testing.assert_array_equal(cuts[cut_id].load_features(), original.load_features())
    assert sorted(c.id for c in CutSet.from_file(out / f"cuts_{DEV}.jsonl.gz")) == [
        "84-121123-0000",
        "84-121123-0001",
    ]
    assert (out / "cmvn.json").read_bytes() == (plain_out / "cmvn.json").read_bytes()
    copies = report["subsets"][TRAIN].pop("speed_copies")
    assert copies == {"factors": [0.9, 1.1], "cuts": 10, "hours": pytest.approx(0.0042, abs=2e-4)}
    assert {**report, "out_dir": None} == {**plain, "out_dir": None}


def test_speed_perturb_is_part_of_a_finished_subsets_identity(prepared_sp, tmp_path):
    """A rerun with the same factors keeps the subset; without them it redoes the subset (no
    copies left), and with them again redoes it once more."""
    corpus_out, _ = prepared_sp
    out = tmp_path / "data"
    shutil.copytree(corpus_out, out)
    corpus = Path(json.loads((out / "prepare_report.json").read_text())["corpus_dir"])
    stamps = _stamps(out / "feats" / TRAIN)
    _prepare(corpus, out, "tokenizer=char", "speed_perturb=[0.9,1.1]")
    assert _stamps(out / "feats" / TRAIN) == stamps
    _prepare(corpus, out, "tokenizer=char")
    assert not any("_sp" in c.id for c in CutSet.from_file(out / f"cuts_{TRAIN}.jsonl.gz"))
    report = _prepare(corpus, out, "tokenizer=char", "speed_perturb=[1.1]")
    assert report["subsets"][TRAIN]["speed_copies"]["cuts"] == 5


def test_a_speed_copy_too_short_for_ctc_is_dropped_and_its_original_kept(tmp_path):
    """1.0 s gives 25 output frames for a 24-character transcript; its 1.1 copy (0.909 s, 22
    frames) is dropped as too_short_for_ctc, its 0.9 copy kept."""
    corpus = tmp_path / "LibriSpeech"
    folder = _chapter(corpus, TRAIN, "7", "70", ["7-70-0000 ABCDEFGHIJKLMNOPQRSTUVWX"])
    _flac(folder / "7-70-0000.flac", seconds=1.0)
    out = tmp_path / "data"
    report = _prepare(corpus, out, f"subsets=[{TRAIN}]", "num_jobs=1", "speed_perturb=[0.9,1.1]")
    cuts = CutSet.from_file(out / f"cuts_{TRAIN}.jsonl.gz")
    assert sorted(c.id for c in cuts) == ["7-70-0000", "7-70-0000_sp0.9"]
    reasons = report["subsets"][TRAIN]["reasons"]
    assert reasons["too_short_for_ctc"]["examples"] == ["7-70-0000_sp1.1 (22 frames < 24 needed)"]


def test_bad_speed_factors_are_a_config_error(corpus, tmp_path):
    for factors in ("[1.0]", "[0.9,0.9]", "[0]"):
        with pytest.raises(ConfigError, match=r"speed_perturb=.*expected distinct factors"):
            _prepare(corpus, tmp_path, f"speed_perturb={factors}")
