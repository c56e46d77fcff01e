"""Hotwords (asr_kd.inference.hotwords): the context graph's bonus, the hotword file, and
``asr-kd-lm hotwords`` picking the rare test words of a data dir."""

from __future__ import annotations

import pytest

from asr_kd.cli.lm import main
from asr_kd.errors import BadFileError, MissingFileError
from asr_kd.inference.hotwords import ContextGraph, read_hotwords
from asr_kd.inference.lm import subset_texts


def _total(graph: ContextGraph, units) -> float:
    node, total = graph.root, 0.0
    for unit in units:
        node, bonus = graph.step(node, unit)
        total += bonus
    return total + graph.finish(node)


def test_a_completed_hotword_keeps_its_bonus_and_a_broken_one_gives_it_back():
    graph = ContextGraph([((1, 2, 3), 0.5), ((7, 8), 2.0)])
    assert _total(graph, (9, 1, 2, 3, 9)) == pytest.approx(1.5)
    assert _total(graph, (1, 2, 9, 3)) == pytest.approx(0.0)
    assert _total(graph, (1, 2)) == pytest.approx(0.0)  # cut by the end of the utterance
    assert _total(graph, (7, 8, 1, 2, 3, 7, 8)) == pytest.approx(9.5)


def test_a_failed_match_restarts_inside_itself():
    """ABAC in ABABAC: the failure link after ABA goes to AB's A, so the second try matches."""
    a, b, c = 1, 2, 3
    graph = ContextGraph([((a, b, a, c), 1.0)])
    assert _total(graph, (a, b, a, b, a, c)) == pytest.approx(4.0)
    node = graph.root
    earned = []
    for unit in (a, b, a, b):
        node, bonus = graph.step(node, unit)
        earned.append(bonus)
    assert earned == pytest.approx([1.0, 1.0, 1.0, -1.0])  # ABA -> AB: one unit given back


def test_the_hotword_file_takes_a_boost_per_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "hot.txt"
    path.write_text("anna karenina\t4.5\n\nVronsky\nanna karenina\t6\n")
    assert read_hotwords(path, default_boost=2.0) == [("ANNA KARENINA", 6.0), ("VRONSKY", 2.0)]
    path.write_text("LEVIN\tlots\n")
    with pytest.raises(BadFileError, match=r"hot.txt:1: boost 'lots' is not a number"):
        read_hotwords(path, 2.0)
    path.write_text("\n")
    with pytest.raises(BadFileError, match="holds no hotword"):
        read_hotwords(path, 2.0)
    with pytest.raises(MissingFileError, match="hotword file not found"):
        read_hotwords(tmp_path / "absent.txt", 2.0)


def test_asr_kd_lm_hotwords_writes_the_rarest_test_words(tmp_path, prepared_data_dir, capsys):
    out = tmp_path / "hotwords.txt"
    argv = ["hotwords", "--data-dir", str(prepared_data_dir), "--out", str(out)]
    assert main([*argv, "--max-train-count", "1000000", "--min-chars", "3", "--limit", "3"]) == 0
    words = out.read_text().split()
    assert len(words) == 3 and capsys.readouterr().out.startswith(f"{out}: 3 hotwords")
    test_words = " ".join(subset_texts(prepared_data_dir, ["test"])).split()
    assert all(w in test_words and len(w) >= 3 for w in words)
    assert read_hotwords(out, 3.0) == [(w, 3.0) for w in words]
    assert main([*argv, "--max-train-count", "0", "--min-chars", "40"]) == 2
    assert capsys.readouterr().err.startswith("error: no word of ")
