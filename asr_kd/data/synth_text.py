"""What the synthetic corpus says: one text source per ``text`` setting of conf/synth.yaml.

Two sources, in :data:`TEXT_SOURCES`:

``words``      each word drawn independently from the top-``vocab_size`` English words of
               ``wordfreq`` (weight ``frequency ** freq_power``): a closed vocabulary, no word
               order, 0 % test OOV. Cheap to learn.
``sentences``  real sentences from a shipped book text (Jane Austen's six novels, public domain,
               ``asr_kd/data/texts/austen.tsv.gz``, see :data:`AUSTEN`). Books are split by
               role, as LibriSpeech splits its books: a subset called ``train*`` reads the
               ``books.train`` novels, ``dev*`` and ``test*`` their own, disjoint novels. A
               sentence is used when its length is within ``words_per_utt`` and all its words
               are among the ``vocab_size`` most frequent words of the training books, so the
               test set has the few OOV words (against the training transcripts) that a real
               corpus has. Each subset walks a seed-shuffled order of its role's sentences
               (utterance ``i`` says sentence ``order[i % n]``), so no sentence repeats before
               the pool is used up, whatever the number of worker processes.

A source gives the text of utterance ``i`` of a subset, babble text for the noise, and the LM
text (``librispeech-lm-norm.txt.gz``, openslr 11's name): every sentence of the training books,
unrestricted, never a dev or test book (``words``: the training transcripts).

Usage:
    source = build_text_source("sentences", settings)     # settings: TextSettings
    source.utterance("train", 0, rng); source.lm_sentences(); source.summary()
    text_stats({"train": [...], "test": [...]})           # vocabulary and OOV of written text
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from asr_kd.errors import ConfigError, MissingFileError

__all__ = [
    "AUSTEN",
    "TEXT_SOURCES",
    "SentenceText",
    "TextSettings",
    "TextSource",
    "WordText",
    "build_text_source",
    "build_vocabulary",
    "read_book_text",
    "subset_role",
    "text_stats",
    "write_lm_text",
]

AUSTEN = Path(__file__).parent / "texts" / "austen.tsv.gz"
ROLES = ("train", "dev", "test")
_WORD = re.compile(r"[a-z']+")


class TextSettings(Protocol):
    """The settings a text source is built from (asr_kd.data.synthetic.SynthSettings has them)."""

    text: str
    seed: int
    vocab_size: int
    freq_power: float
    words_per_utt: tuple[int, int]
    books: Mapping[str, Sequence[str]]
    text_file: str | None


class TextSource(Protocol):
    """The text side of the synthetic corpus (lower case; transcripts are upper-cased)."""

    def utterance(self, subset: str, index: int, rng: np.random.Generator) -> str:
        """The words of utterance ``index`` of ``subset``."""

    def babble(self, subset: str, rng: np.random.Generator) -> str:
        """Text for one background talker of babble noise."""

    def lm_sentences(self, train_transcripts: Sequence[str]) -> list[str]:
        """Upper-case LM text: never a dev or test sentence."""

    def summary(self) -> dict:
        """What the source is (for text_stats.json)."""


def subset_role(subset: str) -> str:
    """``train``, ``dev`` or ``test`` from a subset name (``train-clean-100`` -> ``train``).

    >>> subset_role("test-other")
    'test'
    """
    role = subset.split("-")[0]
    if role not in ROLES:
        raise ConfigError(
            f"subset {subset!r}: text=sentences needs subset names starting with train, dev or "
            "test (their books come from books.<role>); use text=words for other names"
        )
    return role


def build_vocabulary(vocab_size: int, freq_power: float = 1.0) -> tuple[list[str], np.ndarray]:
    """The ``vocab_size`` most frequent English words matching ``[a-z']+`` and their sampling
    probabilities ``(vocab_size,)``, proportional to ``frequency ** freq_power``.

    ``freq_power < 1`` flattens Zipf's law so that the rarer words still occur in an hour of audio.
    """
    from wordfreq import top_n_list, word_frequency

    words = [w for w in top_n_list("en", vocab_size * 3 + 100) if _WORD.fullmatch(w)]
    # Single letters other than "a" and "i" are tokeniser debris ("s", "t" from "it's").
    words = [w for w in words if len(w) > 1 or w in ("a", "i")][:vocab_size]
    if len(words) < vocab_size:
        raise ConfigError(f"wordfreq has only {len(words)} usable words, vocab_size={vocab_size}")
    freqs = np.array([word_frequency(w, "en") for w in words], dtype=np.float64) ** freq_power
    return words, freqs / freqs.sum()


@dataclass
class WordText:
    """Independent words from a weighted vocabulary (``text=words``)."""

    words: list[str]
    probs: np.ndarray
    words_per_utt: tuple[int, int]

    def _draw(self, rng: np.random.Generator, low: int, high: int) -> str:
        count = int(rng.integers(low, high + 1))
        return " ".join(self.words[i] for i in rng.choice(len(self.words), count, p=self.probs))

    def utterance(self, subset: str, index: int, rng: np.random.Generator) -> str:
        return self._draw(rng, *self.words_per_utt)

    def babble(self, subset: str, rng: np.random.Generator) -> str:
        return self._draw(rng, 12, 20)

    def lm_sentences(self, train_transcripts: Sequence[str]) -> list[str]:
        return list(train_transcripts)

    def summary(self) -> dict:
        return {"text": "words", "source": "wordfreq", "vocab_size": len(self.words)}


def read_book_text(path: str | Path) -> list[tuple[str, str]]:
    """``(book, SENTENCE)`` rows of a ``book<TAB>SENTENCE`` .tsv(.gz); ``#`` lines are comments."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"text_file {path} not found (expected book<TAB>SENTENCE lines)")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip():
                continue
            book, sep, sentence = line.rstrip("\n").partition("\t")
            if not sep or not sentence.strip():
                raise ConfigError(f"{path}:{number}: expected book<TAB>SENTENCE, got {line!r}")
            rows.append((book, sentence))
    return rows


@dataclass
class SentenceText:
    """Real sentences, books split by role (``text=sentences``); see the module docstring."""

    pools: dict[str, list[str]]  # role -> eligible sentences (lower case)
    lm_text: list[str]  # every sentence of the training books, upper case
    seed: int
    info: dict
    _orders: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, str]],
        books: Mapping[str, Sequence[str]],
        vocab_size: int,
        words_per_utt: tuple[int, int],
        seed: int = 0,
        source: str = "",
    ) -> SentenceText:
        rows = list(rows)
        role_of = _role_of_book(books, {b for b, _ in rows}, source)
        counts = Counter(w for b, s in rows if role_of.get(b) == "train" for w in s.split())
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        word_list = set(ranked[:vocab_size])
        low, high = words_per_utt
        pools: dict[str, list[str]] = {role: [] for role in books}
        for book, sentence in rows:
            words = sentence.split()
            if book in role_of and low <= len(words) <= high and word_list.issuperset(words):
                pools[role_of[book]].append(sentence.lower())
        empty = [role for role, pool in pools.items() if not pool]
        if empty:
            raise ConfigError(
                f"no sentence of books.{empty[0]} {list(books[empty[0]])} has {low}-{high} words "
                f"all among the top vocab_size={vocab_size}: raise vocab_size or widen words_per_utt"
            )
        info = {
            "text": "sentences",
            "source": source,
            "books": {role: list(b) for role, b in books.items()},
            "vocab_size": len(word_list),
            "training_book_vocabulary": len(counts),
            "words_per_utt": [low, high],
            "sentences_available": {role: len(pool) for role, pool in pools.items()},
        }
        lm_text = [s for b, s in rows if role_of.get(b) == "train"]
        return cls(pools, lm_text, seed, info)

    def _order(self, subset: str) -> np.ndarray:
        if subset not in self._orders:
            pool = self.pools.get(subset_role(subset))
            if pool is None:
                raise ConfigError(f"subset {subset!r} needs books.{subset_role(subset)}")
            rng = np.random.default_rng([self.seed, zlib.crc32(subset.encode()), 0x7E47])
            self._orders[subset] = rng.permutation(len(pool))
        return self._orders[subset]

    def utterance(self, subset: str, index: int, rng: np.random.Generator) -> str:
        order = self._order(subset)
        return self.pools[subset_role(subset)][order[index % len(order)]]

    def babble(self, subset: str, rng: np.random.Generator) -> str:
        pool = self.pools[subset_role(subset)]
        return pool[int(rng.integers(len(pool)))]

    def lm_sentences(self, train_transcripts: Sequence[str]) -> list[str]:
        return self.lm_text

    def summary(self) -> dict:
        return self.info


def _role_of_book(books: Mapping[str, Sequence[str]], known: set[str], source: str) -> dict:
    missing = [r for r in ("train",) if not books.get(r)]
    if missing:
        raise ConfigError(f"books.train is empty; name the training books of {source}")
    role_of: dict[str, str] = {}
    for role, names in books.items():
        if role not in ROLES:
            raise ConfigError(f"books.{role}: unknown role; expected {', '.join(ROLES)}")
        for book in names:
            if book not in known:
                raise ConfigError(f"books.{role}: {book!r} is not in {source} ({sorted(known)})")
            if book in role_of:
                raise ConfigError(
                    f"book {book!r} is in books.{role_of[book]} and books.{role}: dev/test books "
                    "must be disjoint from the training books"
                )
            role_of[book] = role
    return role_of


def _words_source(settings: TextSettings) -> WordText:
    words, probs = build_vocabulary(settings.vocab_size, settings.freq_power)
    return WordText(words, probs, settings.words_per_utt)


def _sentences_source(settings: TextSettings) -> SentenceText:
    path = Path(settings.text_file) if settings.text_file else AUSTEN
    return SentenceText.from_rows(
        read_book_text(path),
        settings.books,
        settings.vocab_size,
        settings.words_per_utt,
        settings.seed,
        source=path.name,
    )


TEXT_SOURCES: dict[str, Callable[[TextSettings], TextSource]] = {
    "words": _words_source,
    "sentences": _sentences_source,
}


def build_text_source(settings: TextSettings) -> TextSource:
    """The source named by ``settings.text`` (a key of :data:`TEXT_SOURCES`)."""
    if settings.text not in TEXT_SOURCES:
        raise ConfigError(f"text={settings.text!r}; expected one of {sorted(TEXT_SOURCES)}")
    return TEXT_SOURCES[settings.text](settings)


def text_stats(transcripts: Mapping[str, Sequence[str]]) -> dict:
    """Vocabulary of the training transcripts and each other subset's OOV rate against it.

    ``transcripts``: subset -> its transcripts (upper case). Training subsets are those whose
    name starts with ``train``; OOV counts running words (tokens) not in their vocabulary.

    >>> text_stats({"train": ["A B", "B C"], "test": ["A D"]})["subsets"]["test"]["oov_percent"]
    50.0
    """
    train = [t for s, ts in transcripts.items() if s.startswith("train") for t in ts]
    vocab = {w for t in train for w in t.split()}
    subsets = {}
    for subset, texts in transcripts.items():
        tokens = [w for t in texts for w in t.split()]
        entry = {"utterances": len(texts), "words": len(tokens), "vocabulary": len(set(tokens))}
        if not subset.startswith("train"):
            oov = sum(w not in vocab for w in tokens)
            entry["oov_words"] = oov
            entry["oov_percent"] = round(100.0 * oov / max(len(tokens), 1), 2)
            entry["distinct_texts_also_in_train"] = len(set(texts) & set(train))
        subsets[subset] = entry
    return {"train_vocabulary": len(vocab), "subsets": subsets}


def write_lm_text(path: Path, sentences: Iterable[str]) -> int:
    """``path`` (gzip, one upper-case sentence a line, byte-identical per input); returns lines."""
    count = 0
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for sentence in sentences:
            f.write(sentence.upper().encode() + b"\n")
            count += 1
    return count
