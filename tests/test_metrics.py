"""WER/CER/RTF as reported: hand-counted cases, so a change in alignment or scaling shows."""

from __future__ import annotations

import time

import pytest

from asr_kd.metrics import (
    Timer,
    char_error_rate,
    error_rates,
    real_time_factor,
    word_error_rate,
)


def test_wer_matches_hand_count_with_sub_del_ins():
    # ref: ONE TWO THREE FOUR FIVE SIX (6 words)
    # hyp: ZERO ONE TOO THREE FOUR FIVE
    # by hand: insert ZERO, TWO -> TOO (substitution), SIX deleted: 3 errors / 6 words.
    r = word_error_rate(["ONE TWO THREE FOUR FIVE SIX"], ["ZERO ONE TOO THREE FOUR FIVE"])
    assert (r["num_sub"], r["num_del"], r["num_ins"], r["ref_words"]) == (1, 1, 1, 6)
    assert r["wer"] == pytest.approx(50.0)
    assert r["sub"] == pytest.approx(100 / 6)
    assert r["del"] == pytest.approx(100 / 6)
    assert r["ins"] == pytest.approx(100 / 6)


def test_wer_is_corpus_level_not_mean_of_utterances():
    # utt 1: 1 sub in 1 word (100 %); utt 2: 0 errors in 3 words. Corpus: 1 / 4 = 25 %, not 50 %.
    r = word_error_rate(["A", "B C D"], ["X", "B C D"])
    assert r["wer"] == pytest.approx(25.0)
    assert r["ref_words"] == 4


def test_empty_hypothesis_is_all_deletions_and_extra_spaces_ignored():
    r = word_error_rate(["HELLO  WORLD "], [""])
    assert (r["num_del"], r["wer"]) == (2, pytest.approx(100.0))


def test_cer_counts_characters_including_spaces():
    # "AB CD" (5 chars incl. the space) vs "AB CE": one substitution -> 20 %.
    r = char_error_rate(["AB CD"], ["AB CE"])
    assert r["cer"] == pytest.approx(20.0)
    assert r["ref_chars"] == 5


def test_error_rates_uses_the_reported_names():
    r = error_rates(["THE CAT SAT"], ["THE BAT SAT DOWN"])
    assert {"wer", "cer", "sub", "del", "ins"} <= set(r)
    assert r["wer"] == pytest.approx(r["sub"] + r["del"] + r["ins"])
    assert r["wer"] == pytest.approx(200 / 3)


def test_mismatched_or_empty_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["A", "B"], ["A"])
    with pytest.raises(ValueError, match="no words"):
        word_error_rate([""], ["A"])


def test_rtf_and_timer():
    assert real_time_factor(0.5, 10.0) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="audio_seconds"):
        real_time_factor(1.0, 0.0)
    t = Timer()
    for _ in range(2):
        with t:
            time.sleep(0.01)
    assert t.calls == 2 and 0.02 <= t.seconds < 0.5
