"""Word n-gram LMs (asr_kd.inference.lm): the Kneser-Ney ARPA writer is a distribution per
context, its figures are Chen & Goodman's; openslr 11's gzipped ARPA and lexicon read as they
are."""

from __future__ import annotations

import gzip
import os

import pytest

from asr_kd.errors import BadFileError, ConfigError
from asr_kd.inference import lm

TEXT = [
    "THE CAT SAT ON THE MAT",
    "THE DOG SAT ON THE LOG",
    "A CAT AND A DOG",
    "THE CAT SAT",
    "THE DOG RAN",
    "A DOG SAT ON A CAT",
    "THE MAT",
]

# The head of openslr 11's 3-gram.pruned.1e-7.arpa, in its format (tabs, back-offs, \end\).
OPENSLR_HEAD = """
\\data\\
ngram 1=5
ngram 2=2

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.5
-2.0\t<unk>\t0
-1.2\tA\t-0.3
-1.5\tABANDON\t-0.2

\\2-grams:
-0.4\t<s> A
-0.7\tA ABANDON

\\end\\
"""


def _log10_prob(ngrams, words):
    """ARPA back-off: the stored n-gram, else bow(context) x p(w | shorter context)."""
    n = len(words)
    if words in ngrams.get(n, {}):
        return ngrams[n][words][0]
    if n == 1:
        return ngrams[1][(lm.UNK,)][0]
    bow = ngrams.get(n - 1, {}).get(words[:-1], (0.0, 0.0))[1]
    return bow + _log10_prob(ngrams, words[1:])


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_distribution_over_the_vocabulary(tmp_path, order):
    counts = lm.build_arpa(TEXT, tmp_path / "lm.arpa", order=order)
    ngrams = lm.read_arpa(tmp_path / "lm.arpa")
    assert counts == {n: len(ngrams[n]) for n in ngrams}
    vocab = [w for (w,) in ngrams[1] if w != lm.BOS]
    contexts = {g[:-1] for n in ngrams for g in ngrams[n]} | {("NEVER", "SEEN", "THE")}
    for context in contexts:
        context = context[-(order - 1) :] if order > 1 else ()
        total = sum(10 ** _log10_prob(ngrams, (*context, w)) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-4), context


def test_unigrams_are_discounted_and_interpolated_with_the_uniform():
    """A B / A: counts A 2, B 1, </s> 2 of 5; too few counts for D: fallback 0.5, 1, 1.5, so
    bow = (1 + 0.5 + 1) / 5 = 0.5, spread over 4 words (A, B, </s>, <unk>)."""
    raw = lm.count_ngrams(["A B", "A"], 1)
    probs, _ = lm._estimate(lm._adjusted(raw, 1), 1)
    assert probs[1] == pytest.approx(
        {("A",): 0.325, ("B",): 0.225, (lm.EOS,): 0.325, (lm.UNK,): 0.125}
    )


def test_discounts_are_chen_and_goodmans_where_counts_allow():
    from collections import Counter

    counts = Counter({i: c for i, c in enumerate([1] * 10 + [2] * 5 + [3] * 3 + [4] * 2)})
    y = 10 / (10 + 2 * 5)
    assert lm.discounts(counts) == pytest.approx(
        (1 - 2 * y * 5 / 10, 2 - 3 * y * 3 / 5, 3 - 4 * y * 2 / 3)
    )


def test_continuation_counts_below_the_top_order():
    """FRANCISCO follows SAN only: one distinct left neighbour, though seen 3 times."""
    raw = lm.count_ngrams(["SAN FRANCISCO", "SAN FRANCISCO", "SAN FRANCISCO", "A B"], 2)
    adjusted = lm._adjusted(raw, 2)
    assert adjusted[1][("FRANCISCO",)] == 1 and raw[1][("FRANCISCO",)] == 3
    assert adjusted[1][("SAN",)] == 1  # after <s> only
    assert (lm.BOS,) not in adjusted[1]


def test_no_text_or_no_order_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no text"):
        lm.build_arpa(["", ""], tmp_path / "lm.arpa")
    with pytest.raises(ConfigError, match="order must be >= 1, got 0"):
        lm.build_arpa(TEXT, tmp_path / "lm.arpa", order=0)


def test_openslr_gzipped_arpa_is_decompressed_once_into_the_cache(tmp_path):
    download = tmp_path / "3-gram.pruned.1e-7.arpa.gz"
    with gzip.open(download, "wt") as f:
        f.write(OPENSLR_HEAD)
    cache = tmp_path / "cache"
    path = lm.arpa_file(download, cache)
    assert path.name == "3-gram.pruned.1e-7.arpa" and path.parent.parent == cache
    assert lm.arpa_words(path) == ["A", "ABANDON"]
    assert lm.read_arpa(path)[2][("A", "ABANDON")] == (-0.7, 0.0)
    path.write_text("stale")
    assert lm.arpa_file(download, cache).read_text() == "stale"  # decompressed once
    os.utime(path, (1, 1))
    os.utime(download, (2, 2))  # a newer download replaces the copy
    assert lm.arpa_words(lm.arpa_file(download, cache)) == ["A", "ABANDON"]
    plain = tmp_path / "lm.arpa"
    plain.write_text(OPENSLR_HEAD)
    assert lm.arpa_file(plain, cache) == plain
    other = tmp_path / "other" / download.name  # the same file name, another LM
    other.parent.mkdir()
    with gzip.open(other, "wt") as f:
        f.write(OPENSLR_HEAD.replace("ABANDON", "ABOUT"))
    os.utime(other, (1, 1))  # older than the first one's copy: still not mistaken for it
    assert lm.arpa_words(lm.arpa_file(other, cache)) == ["A", "ABOUT"]
    assert not list(cache.rglob("*.tmp"))


def test_the_vocabulary_is_read_from_the_unigrams_alone(tmp_path):
    """A 4-gram LM's words without reading its higher orders (here: not ARPA at all)."""
    path = tmp_path / "lm.arpa"
    path.write_text(OPENSLR_HEAD.replace("\\end\\", "garbage that is not ARPA\n"))
    assert lm.arpa_words(path) == ["A", "ABANDON"]
    (tmp_path / "bad.arpa").write_text("not an LM\n")
    with pytest.raises(BadFileError, match="not an ARPA file"):
        lm.arpa_words(tmp_path / "bad.arpa")


def test_librispeech_lexicon_words_in_file_order_once(tmp_path):
    path = tmp_path / "librispeech-lexicon.txt"
    path.write_text("A\tAH0\nA\tEY1\nA''S\tEY1 Z\nABANDON\tAH0 B AE1 N D AH0 N\n\n")
    assert lm.lexicon_words(path) == ["A", "A''S", "ABANDON"]
