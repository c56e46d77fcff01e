"""Word n-gram language models for beam search: build an ARPA file, read one, make a lexicon.

- :func:`build_arpa`: an interpolated modified Kneser-Ney n-gram (Chen & Goodman 1998, the
  estimate KenLM's ``lmplz`` makes, without pruning) of normalised sentences, written as ARPA.
  No maintained PyPI package builds ARPA with Kneser-Ney here: the ``kenlm`` module only
  queries (``lmplz`` is a C++ binary outside it), ``kaldilm`` only reads ARPA, and ``nltk.lm``
  has no ARPA writer. Pure Python: fine for training transcripts (millions of words), not
  for LibriSpeech's 800 M-word LM corpus (use openslr 11's ready-made files for that).
- :func:`arpa_file`: an ARPA path as the decoder reads it; a gzipped one (openslr 11's
  ``3-gram.pruned.1e-7.arpa.gz``, ``4-gram.arpa.gz``) decompressed once into a cache.
- :func:`read_arpa` / :func:`arpa_words`: the n-grams of a (small) ARPA file; its unigram words
  (read up to the end of the 1-gram section only, so a 4-gram LM's vocabulary is quick).
- :func:`subset_texts` / :func:`text_lines`: the sentences to build from: a prepared data dir's
  training transcripts, or any text file (one sentence per line, normalised as transcripts are).
- :func:`lexicon_words`: the words of a lexicon file (``WORD spelling...`` per line, as
  ``librispeech-lexicon.txt``; the spelling is dropped: the decoder re-spells each word with our
  tokenizer).

ARPA probabilities are log10. In the interpolated model, a seen n-gram's stored probability is
``(c(h w) - D(c)) / c(h) + bow(h) * p(w | h')`` and ``bow(h) = sum_k D_k N_k(h .) / c(h)``, so the
standard back-off rule for an unseen ``w`` gives the interpolated probability too. Counts at the
highest order are raw counts; at lower orders they are continuation counts (distinct left
neighbours), except for n-grams that start with ``<s>``, which have no left neighbour.

Usage:
    build_arpa(["THE CAT SAT", "THE DOG SAT"], "lm/3gram.arpa", order=3)
    path = arpa_file("downloads/3-gram.pruned.1e-7.arpa.gz", cache_dir="~/.cache/asr_kd/lm")
    words = arpa_words(path)                      # {"THE", "CAT", ...}, no <s> </s> <unk>
    ngrams = read_arpa(path)                      # {order: {words tuple: (log10 p, log10 bow)}}
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from asr_kd.checkpoint import atomic_write
from asr_kd.data.datamodule import cut_text, load_cuts
from asr_kd.data.tokenizer import normalize_text
from asr_kd.errors import BadFileError, ConfigError, MissingFileError

__all__ = [
    "BOS",
    "EOS",
    "UNK",
    "arpa_file",
    "arpa_words",
    "build_arpa",
    "count_ngrams",
    "discounts",
    "lexicon_words",
    "read_arpa",
    "subset_texts",
    "text_lines",
]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_NEVER = -99.0  # log10 probability ARPA writers give <s>, which is never predicted
_FALLBACK = (0.5, 1.0, 1.5)  # KenLM's --discount_fallback, for counts too few to estimate D


def count_ngrams(sentences: Iterable[str], order: int) -> dict[int, Counter]:
    """Raw counts of every n-gram (n = 1..order) of ``<s> words </s>`` per sentence.

    >>> count_ngrams(["A B"], 2)[2]
    Counter({('<s>', 'A'): 1, ('A', 'B'): 1, ('B', '</s>'): 1})
    """
    counts = {n: Counter() for n in range(1, order + 1)}
    for sentence in sentences:
        words = [BOS, *sentence.split(), EOS]
        for n in range(1, order + 1):
            counts[n].update(zip(*(words[i:] for i in range(n)), strict=False))
    return counts


def _adjusted(raw: dict[int, Counter], order: int) -> dict[int, Counter]:
    """Raw counts at ``order``; continuation counts below it (n-grams from ``<s>``: raw)."""
    adjusted = {order: raw[order]}
    for n in range(order - 1, 0, -1):
        left = Counter(gram[1:] for gram in raw[n + 1])
        adjusted[n] = Counter(
            {gram: c if gram[0] == BOS else left[gram] for gram, c in raw[n].items()}
        )
    adjusted[1] = Counter({g: c for g, c in adjusted[1].items() if g != (BOS,)})  # a context only
    return adjusted


def discounts(counts: Counter) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the counts-of-counts; KenLM's fallback
    (0.5, 1, 1.5) where they are too few to estimate one (tiny texts).

    >>> discounts(Counter({"a": 1, "b": 1, "c": 2, "d": 3, "e": 4}))
    (0.5, 0.5, 1.0)
    >>> discounts(Counter({"a": 1, "b": 2}))  # no count of 3 or 4
    (0.5, 1.0, 1.5)
    """
    n = Counter(min(c, 4) for c in counts.values())
    if min(n[1], n[2], n[3], n[4]) == 0:
        return _FALLBACK
    y = n[1] / (n[1] + 2 * n[2])
    found = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
    if not all(0 < d < k + 1 for k, d in enumerate(found)):
        return _FALLBACK
    return found


def _estimate(adjusted: dict[int, Counter], order: int) -> tuple[dict, dict]:
    """Interpolated probabilities ``{n: {gram: p}}`` and back-off weights ``{gram: bow}``."""
    probs, bows = {}, {}
    vocab = [gram[0] for gram in adjusted[1]] + [UNK]
    for n in range(1, order + 1):
        d = discounts(adjusted[n])
        totals, mass = defaultdict(float), defaultdict(float)
        for gram, c in adjusted[n].items():
            totals[gram[:-1]] += c
            mass[gram[:-1]] += d[min(c, 3) - 1]
        for context, total in totals.items():
            bows[context] = mass[context] / total
        probs[n] = {}
        for gram, c in adjusted[n].items():
            lower = 1.0 / len(vocab) if n == 1 else probs[n - 1][gram[1:]]
            context = gram[:-1]
            probs[n][gram] = (c - d[min(c, 3) - 1]) / totals[context] + bows[context] * lower
        if n == 1:
            probs[1][(UNK,)] = bows[()] / len(vocab)
    return probs, bows


def build_arpa(sentences: Iterable[str], out: str | Path, order: int = 3) -> dict[int, int]:
    """Write the modified Kneser-Ney ``order``-gram of ``sentences`` (normalised text, one
    sentence each) to ``out`` as ARPA; returns the number of n-grams per order."""
    if order < 1:
        raise ConfigError(f"n-gram order must be >= 1, got {order}")
    sentences = [s for s in tqdm(sentences, desc="read text", unit="sent", leave=False) if s]
    if not sentences:
        raise ConfigError(f"no text to build the {order}-gram {out} from")
    raw = count_ngrams(sentences, order)
    probs, bows = _estimate(_adjusted(raw, order), order)
    probs[1][(BOS,)] = 10.0**_NEVER

    def write(binary) -> None:
        f = io.TextIOWrapper(binary, encoding="utf-8")
        f.write("\\data\\\n")
        f.writelines(f"ngram {n}={len(probs[n])}\n" for n in range(1, order + 1))
        for n in range(1, order + 1):
            f.write(f"\n\\{n}-grams:\n")
            for gram in sorted(probs[n]):
                line = f"{_log10(probs[n][gram]):.6f}\t{' '.join(gram)}"
                if n < order and gram in bows:
                    line += f"\t{_log10(bows[gram]):.6f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
        f.detach()  # flushed into the binary file, which atomic_write closes

    atomic_write(out, write)  # a half-written LM is never read as a whole one
    return {n: len(probs[n]) for n in probs}


def _log10(p: float) -> float:
    return _NEVER if p <= 0.0 else math.log10(p)


def arpa_file(path: str | Path, cache_dir: str | Path) -> Path:
    """``path`` itself, or for ``*.gz`` its decompressed copy in ``cache_dir`` (made once;
    made again when the download is newer than the copy). Copies are kept apart by the
    download's absolute path (two ``3-gram.arpa.gz`` in two directories are two copies) and
    written atomically (processes decompressing the same file at once leave one whole copy)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"language model not found: {path}")
    if path.suffix != ".gz":
        return path
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    cache = Path(cache_dir).expanduser() / where / path.stem
    if not cache.is_file() or cache.stat().st_mtime < path.stat().st_mtime:

        def decompress(dst) -> None:
            with gzip.open(path, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)

        try:
            atomic_write(cache, decompress)
        except (OSError, EOFError) as err:
            raise BadFileError(f"cannot decompress {path}: {err}") from err
    return cache


def _sections(path: Path, last_order: int | None):
    """``(order, fields)`` for each n-gram line of ARPA ``path`` (up to ``last_order``)."""
    order = 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\") and line.endswith("-grams:"):
                order = int(line[1:].split("-")[0])
                if last_order is not None and order > last_order:
                    return
            elif line == "\\end\\":
                return
            elif order and line:
                yield order, line.split()
    if order == 0:
        raise BadFileError(f"{path} is not an ARPA file (no \\1-grams: section)")


def read_arpa(path: str | Path) -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
    """Every n-gram of ARPA ``path``: ``{order: {words: (log10 p, log10 bow)}}`` (bow 0 where
    absent). Holds the whole model in memory: for small LMs and tests."""
    ngrams: dict[int, dict] = defaultdict(dict)
    for order, fields in _sections(Path(path), None):
        bow = float(fields[order + 1]) if len(fields) > order + 1 else 0.0
        ngrams[order][tuple(fields[1 : order + 1])] = (float(fields[0]), bow)
    return dict(ngrams)


def arpa_words(path: str | Path) -> list[str]:
    """The unigram words of ARPA ``path`` in file order, without ``<s>``, ``</s>``, ``<unk>``."""
    specials = {BOS, EOS, UNK}
    return [f[1] for _, f in _sections(Path(path), 1) if f[1] not in specials]


def text_lines(path: str | Path) -> Iterator[str]:
    """The normalised lines of a text file (``.gz`` too), one sentence each: any text."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"text file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield normalize_text(line)


def subset_texts(data_dir: str | Path, subsets: Iterable[str]) -> Iterator[str]:
    """The transcripts of prepared ``subsets`` of ``data_dir`` (as asr-kd-prepare normalised
    them): the training text of an LM that never sees dev or test."""
    for subset in subsets:
        for cut in load_cuts(data_dir, subset):
            yield cut_text(cut)


def lexicon_words(path: str | Path) -> list[str]:
    """The words of a lexicon file, first column, in file order, each once."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"lexicon not found: {path}")
    words = dict.fromkeys(line.split()[0] for line in path.open(encoding="utf-8") if line.strip())
    return list(words)
