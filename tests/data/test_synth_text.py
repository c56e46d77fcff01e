"""Text sources of asr-kd-synth: sentences split by book, OOV, the LM text, the shipped file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from asr_kd.config import compose
from asr_kd.data import synthetic
from asr_kd.data.synth_text import (
    AUSTEN,
    SentenceText,
    build_text_source,
    read_book_text,
    text_stats,
)
from asr_kd.errors import ConfigError

DEFAULT_BOOKS = {
    "train": ["sense_and_sensibility", "pride_and_prejudice", "mansfield_park", "emma"],
    "dev": ["persuasion"],
    "test": ["northanger_abbey"],
}
# Three tiny "books" with no sentence in common; the words of beta and gamma are all alpha's
# (a held-out sentence is used only when its words are in the training books' word list).
TINY_BOOKS = {
    "alpha": ["THE CAT SAT ON THE MAT", "THE DOG SAT ON THE CAT", "A CAT AND A DOG SAT"],
    "beta": ["THE DOG SAT ON A MAT", "A CAT ON THE MAT"],
    "gamma": ["THE MAT AND THE DOG", "A DOG ON A CAT SAT"],
}


def _rows(books: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(book, sentence) for book, sentences in books.items() for sentence in sentences]


def _draw(source, subset: str, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [source.utterance(subset, i, rng).upper() for i in range(count)]


def test_shipped_text_loads_with_six_books_normalised():
    rows = read_book_text(AUSTEN)
    books = {book for book, _ in rows}
    assert books == {b for names in DEFAULT_BOOKS.values() for b in names}
    assert len(rows) > 30000
    assert all(s.replace("'", "").replace(" ", "").isalpha() and s == s.upper() for _, s in rows)
    assert "MISTER" in {w for _, s in rows[:20000] for w in s.split()}  # "Mr." spelled out


def test_sentences_come_from_their_roles_books_only():
    source = SentenceText.from_rows(
        _rows(TINY_BOOKS), {"train": ["alpha"], "dev": ["beta"], "test": ["gamma"]}, 100, (3, 9)
    )
    assert set(_draw(source, "train", 7)) == set(TINY_BOOKS["alpha"])  # every sentence, no other
    assert set(_draw(source, "dev-clean", 4)) == set(TINY_BOOKS["beta"])
    assert set(_draw(source, "test-other", 4)) == set(TINY_BOOKS["gamma"])
    assert source.lm_sentences([]) == TINY_BOOKS["alpha"]


def test_word_list_and_length_restrict_the_sentences():
    # top-6 training words: THE CAT SAT A DOG ON (counts 4 3 3 2 2 2; AND, MAT once)
    source = SentenceText.from_rows(_rows(TINY_BOOKS), {"train": ["alpha"]}, 6, (3, 6))
    assert source.pools["train"] == ["the dog sat on the cat"]
    assert source.summary()["sentences_available"] == {"train": 1}
    with pytest.raises(ConfigError, match="widen words_per_utt"):  # alpha's are 6 words long
        SentenceText.from_rows(_rows(TINY_BOOKS), {"train": ["alpha"]}, 100, (3, 5))


def test_no_eligible_sentence_is_a_clear_error():
    with pytest.raises(ConfigError, match="raise vocab_size"):
        SentenceText.from_rows(_rows(TINY_BOOKS), {"train": ["alpha"]}, 3, (3, 9))  # THE CAT SAT


@pytest.mark.parametrize(
    ("books", "match"),
    [
        ({"train": ["alpha"], "test": ["alpha"]}, "disjoint"),
        ({"train": ["alpha"], "test": ["omega"]}, "not in"),
        ({"test": ["gamma"]}, "books.train is empty"),
        ({"train": ["alpha"], "eval": ["gamma"]}, "unknown role"),
    ],
)
def test_bad_book_split_is_a_config_error(books, match):
    with pytest.raises(ConfigError, match=match):
        SentenceText.from_rows(_rows(TINY_BOOKS), books, 100, (3, 9))


def test_realistic_split_has_a_few_percent_test_oov_and_no_shared_sentence():
    """The demo's split and word list, at the demo's sizes (~900 train, ~150 test utterances)."""
    source = SentenceText.from_rows(read_book_text(AUSTEN), DEFAULT_BOOKS, 1000, (4, 14))
    stats = text_stats({"train": _draw(source, "train", 900), "test": _draw(source, "test", 150)})
    assert 0 < stats["subsets"]["test"]["oov_percent"] < 5
    assert stats["subsets"]["test"]["distinct_texts_also_in_train"] <= 2  # "YES I AM SURE" and co.
    assert 600 < stats["train_vocabulary"] <= 1000


def test_lm_text_holds_only_training_books():
    rows = read_book_text(AUSTEN)
    source = SentenceText.from_rows(rows, DEFAULT_BOOKS, 1000, (4, 14))
    lm = source.lm_sentences([])
    train_rows = [s for b, s in rows if b in DEFAULT_BOOKS["train"]]
    held_out_only = {s for b, s in rows if b not in DEFAULT_BOOKS["train"]} - set(train_rows)
    assert lm == train_rows  # unrestricted: every training sentence, any length or word
    assert held_out_only and not held_out_only & set(lm)


def test_unknown_text_and_subset_names_are_config_errors():
    settings = synthetic.SynthSettings(hours={"x": 1.0}, speakers={"x": 1}, text="poems")
    with pytest.raises(ConfigError, match="text='poems'"):
        build_text_source(settings)
    source = SentenceText.from_rows(_rows(TINY_BOOKS), {"train": ["alpha"]}, 100, (3, 9))
    with pytest.raises(ConfigError, match="train, dev or test"):
        source.utterance("eval", 0, np.random.default_rng(0))


def _transcripts(root: Path, subset: str) -> list[str]:
    return [
        line.split(" ", 1)[1]
        for trans in sorted((root / subset).rglob("*.trans.txt"))
        for line in trans.read_text().splitlines()
    ]


def test_synth_sentences_end_to_end_writes_stats_and_lm_text(tmp_path):
    text_file = tmp_path / "tiny.tsv"
    text_file.write_text("# a comment\n" + "".join(f"{b}\t{s}\n" for b, s in _rows(TINY_BOOKS)))
    out = tmp_path / "corpus"
    overrides = ["hours.train=0.002", "hours.dev=0.001", "hours.test=0.001", "num_workers=1"]
    books = "books={train:[alpha],dev:[beta],test:[gamma]}"
    cfg = compose(
        "synth",
        [f"out_dir={out}", "text=sentences", f"text_file={text_file}", books, "words_per_utt=[3,9]"]
        + overrides,
    )
    summary = synthetic.run(cfg)
    root = out / "LibriSpeech"
    for subset, book in (("train", "alpha"), ("dev", "beta"), ("test", "gamma")):
        assert set(_transcripts(root, subset)) <= set(TINY_BOOKS[book]), subset
    stats = json.loads((out / synthetic.TEXT_STATS).read_text())
    assert stats == summary["text"] and stats["source"]["text"] == "sentences"
    train_words = {w for t in _transcripts(root, "train") for w in t.split()}
    test_words = [w for t in _transcripts(root, "test") for w in t.split()]
    oov = 100 * sum(w not in train_words for w in test_words) / len(test_words)
    assert stats["subsets"]["test"]["oov_percent"] == pytest.approx(oov, abs=0.01)
    assert stats["train_vocabulary"] == len(train_words)
    with gzip.open(out / synthetic.LM_TEXT, "rt") as f:
        lm = f.read().splitlines()
    assert lm == TINY_BOOKS["alpha"] and stats["lm_text"]["sentences"] == 3
    assert not set(lm) & set(_transcripts(root, "dev") + _transcripts(root, "test"))


def test_words_mode_still_writes_stats_with_zero_test_oov_and_transcripts_as_lm_text(tmp_path):
    overrides = ["hours.train=0.004", "hours.dev=0", "hours.test=0.001", "num_workers=1"]
    cfg = compose("synth", [f"out_dir={tmp_path}", "text=words", "vocab_size=3", *overrides])
    stats = synthetic.run(cfg)["text"]
    assert stats["source"] == {"text": "words", "source": "wordfreq", "vocab_size": 3}
    assert stats["subsets"]["test"]["oov_percent"] == 0.0  # 3 words, all seen in training
    with gzip.open(tmp_path / synthetic.LM_TEXT, "rt") as f:
        assert f.read().splitlines() == _transcripts(tmp_path / "LibriSpeech", "train")
