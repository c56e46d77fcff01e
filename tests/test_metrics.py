"""WER/CER/RTF as reported: hand-counted cases, so a change in alignment or scaling shows."""

from __future__ import annotations

import time

import pytest

from asr_kd.metrics import (
    RaplCounters,
    Timer,
    char_error_rate,
    error_rates,
    error_split,
    per_audio_hour,
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


@pytest.mark.parametrize(
    ("ref", "hyp", "counts"),
    [
        # ONE, TWO -> TOO (sub), THREE lost, FOUR, FIVE lost, SIX, SEVEN, + EIGHT NINE TEN
        (
            "ONE TWO THREE FOUR FIVE SIX SEVEN",
            "ONE TOO FOUR SIX SEVEN EIGHT NINE TEN",
            (1, 2, 3, 7),
        ),
        # A, B -> X (sub), C lost, D, E, + F G
        ("A B C D E", "A X D E F G", (1, 1, 2, 5)),
    ],
)
def test_substitutions_deletions_and_insertions_are_counted_apart(ref, hyp, counts):
    """Unequal hand counts (each has a single optimal alignment): the hand case above has
    sub == del == ins, so swapping two of them would go unnoticed there."""
    num_sub, num_del, num_ins, num_ref = counts
    r = word_error_rate([ref], [hyp])
    assert (r["num_sub"], r["num_del"], r["num_ins"], r["ref_words"]) == counts
    assert r["hits"] == num_ref - num_sub - num_del
    assert r["sub"] == pytest.approx(100 * num_sub / num_ref)
    assert r["del"] == pytest.approx(100 * num_del / num_ref)
    assert r["ins"] == pytest.approx(100 * num_ins / num_ref)
    assert r["wer"] == pytest.approx(100 * (num_sub + num_del + num_ins) / num_ref)


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
    # word level: THE -> A (sub), CAT, SAT lost, ON, THE lost, RED, MAT, + IS NOW UP
    ref, hyp = "THE CAT SAT ON THE RED MAT", "A CAT ON RED MAT IS NOW UP"
    r = error_rates([ref], [hyp])
    assert (r["num_sub"], r["num_del"], r["num_ins"], r["ref_words"]) == (1, 2, 3, 7)
    assert r["sub"] == pytest.approx(100 / 7)
    assert r["del"] == pytest.approx(200 / 7)
    assert r["ins"] == pytest.approx(300 / 7)
    assert r["wer"] == pytest.approx(600 / 7)
    # character level: its own alignment over the 26 characters (spaces included)
    assert r["ref_chars"] == len(ref) == 26
    assert r["cer"] == pytest.approx(char_error_rate([ref], [hyp])["cer"])
    assert r["cer"] != pytest.approx(r["wer"])


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


def test_timer_counts_process_cpu_seconds():
    t = Timer()
    with t:
        time.sleep(0.05)  # wall time, next to no CPU
    with t:
        sum(i * i for i in range(300_000))
    assert 0 < t.cpu_seconds < t.seconds
    assert t.joules is None and t.energy_note == "n/a (not measured)"
    assert per_audio_hour(t.cpu_seconds, 3600.0) == pytest.approx(t.cpu_seconds)


def _powercap(root, packages):
    """A fake /sys/class/powercap: ``{"intel-rapl:0": (energy_uj, max_energy_range_uj)}``,
    plus a subdomain and an mmio copy that must not be counted."""
    for name, (energy, top) in packages.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "energy_uj").write_text(f"{energy}\n")
        (root / name / "max_energy_range_uj").write_text(f"{top}\n")
    for extra in ("intel-rapl:0:0", "intel-rapl-mmio:0"):
        (root / extra).mkdir(exist_ok=True)
        (root / extra / "energy_uj").write_text("123456789\n")
        (root / extra / "max_energy_range_uj").write_text("999999999\n")
    return root


def test_rapl_joules_over_timed_blocks_with_wrap_around(tmp_path):
    root = _powercap(tmp_path, {"intel-rapl:0": (1_000_000, 10_000_000), "intel-rapl:1": (5, 99)})
    rapl = RaplCounters(root)
    assert [d.name for d in rapl.domains] == ["intel-rapl:0", "intel-rapl:1"]
    t = Timer(energy=rapl)
    with t:  # package 0 +2.5 J; package 1 wraps: 5 -> 99 (top) -> 0 -> 3: 94 + 1 + 3 = 98 µJ
        _powercap(root, {"intel-rapl:0": (3_500_000, 10_000_000), "intel-rapl:1": (3, 99)})
    assert t.joules == pytest.approx(2.5 + 98e-6) and t.energy_note is None
    with t:  # package 0 wraps: 3.5 J -> 10 J (top) -> 0 -> 0.5 J: 7 J + 1 µJ
        _powercap(root, {"intel-rapl:0": (500_000, 10_000_000), "intel-rapl:1": (3, 99)})
    assert t.joules == pytest.approx(2.5 + 98e-6 + 7.0 + 1e-6)


def test_rapl_absent_or_unreadable_says_na_never_a_number(tmp_path, monkeypatch):
    t = Timer(energy=RaplCounters(tmp_path / "no-powercap"))
    with t:
        pass
    assert t.joules is None and t.energy_note == "n/a (no RAPL)"
    root = _powercap(tmp_path / "pc", {"intel-rapl:0": (1, 100)})
    read_text = type(root).read_text

    def root_only(path, *args, **kwargs):  # Linux >= 5.10: energy_uj is 0400 root
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(type(root), "read_text", root_only)
    t = Timer(energy=RaplCounters(root))
    with t:
        pass
    assert t.joules is None and t.energy_note == "n/a (RAPL not readable)"


def test_error_split_compares_each_hypothesis_to_the_reference_place_by_place():
    refs = ["A B C D", "E F G", "K L"]
    teacher = ["A X C D", "E F G H", "K L"]  # B->X; +H after G
    student = ["A Y C", "E G", "K L M"]  # B->Y (shared place, other word), -D; -F; +M
    split = error_split(refs, teacher, student)
    assert (split["num_shared"], split["num_own"], split["num_fixed"]) == (1, 3, 1)
    assert split["ref_words"] == 9 and split["shared"] == pytest.approx(100 / 9)
    assert split["shared"] + split["own"] == pytest.approx(error_rates(refs, student)["wer"])
    assert split["shared"] + split["fixed"] == pytest.approx(error_rates(refs, teacher)["wer"])


def test_error_split_of_the_teacher_against_itself_is_all_shared():
    refs, hyps = ["A B C", "D E"], ["A C C C", ""]
    split = error_split(refs, hyps, hyps)
    assert split["own"] == split["fixed"] == 0
    assert split["shared"] == pytest.approx(error_rates(refs, hyps)["wer"])
