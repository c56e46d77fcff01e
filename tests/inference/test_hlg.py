"""HLG graphs (kaldilm + kaldifst) and sherpa-onnx's CTC FST decoder on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asr_kd.cli.lm import main as lm_main
from asr_kd.config import compose
from asr_kd.data.features import load_audio
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError
from asr_kd.evaluation.run import evaluate
from asr_kd.export.sherpa import export_sherpa
from asr_kd.inference.hlg import Grammar, arpa_grammar, build_hlg, lexicon_fst, spellings
from asr_kd.inference.lm import arpa_words, build_arpa
from asr_kd.inference.sherpa import SherpaStreamingDecoder
from asr_kd.models.loading import LoadedModel
from tests.helpers.tiny_runs import evaluate_overrides, tiny_char_model

kaldifst = pytest.importorskip("kaldifst")
pytest.importorskip("kaldilm")
pytest.importorskip("sherpa_onnx")

CHUNK, LEFT = 4, 2
SENTENCES = ["THE CAT SAT", "THE DOG SAT ON THE MAT", "A CAT SAT ON A DOG"]


@pytest.fixture
def student(tiny, prepared_data_dir) -> LoadedModel:
    """A tiny random streaming model (char vocabulary) with the prepared data's CMVN."""
    return tiny_char_model(tiny, prepared_data_dir, "student", True, default_left_chunks=LEFT)


@pytest.fixture
def utterances(tiny_corpus_dir) -> list[np.ndarray]:
    return [load_audio(p)[0] for p in sorted(tiny_corpus_dir.rglob("*.flac"))[:3]]


def _one_sentence(words: list[str]) -> Grammar:
    """G that accepts ``words`` and nothing else (no back-off arc: ``#0`` never used)."""
    ids = {"<eps>": 0, "#0": 1, **{w: i + 2 for i, w in enumerate(dict.fromkeys(words))}}
    arcs = [f"{n} {n + 1} {ids[w]} {ids[w]}" for n, w in enumerate(words)]
    text = "\n".join([*arcs, str(len(words))]) + "\n"
    return Grammar(kaldifst.compile(s=text, acceptor=False), ids)


def test_spellings_leave_out_what_the_tokenizer_cannot_spell():
    spelled = spellings(["CAT", "C4T", "<s>", "#0", "IT'S"], Tokenizer.char())
    assert list(spelled) == ["CAT", "IT'S"]


def test_lexicon_marks_prefixes_so_words_stay_apart():
    tokenizer = Tokenizer.char()
    spelled = spellings(["A", "AT"], tokenizer)  # "A" is a prefix of "AT"
    fst, used = lexicon_fst(spelled, {"A": 5, "AT": 6}, first_disambig=40, space=1)
    a, t, space = (tokenizer.symbols.index(c) + 1 for c in ("A", "T", "▁"))
    ends = {(ins, outs) for ins, outs in _paths_to(fst, 1)}
    assert ends == {((a, 41), (5,)), ((a, t), (6,))} and used == 1
    assert any(arc.ilabel == space for arc in kaldifst.ArcIterator(fst, 1))


def _paths_to(fst, target: int):
    """(inputs, outputs) of the paths from the start state to ``target`` (no cycles on them)."""
    found, todo = [], [(fst.start, (), ())]
    while todo:
        state, ins, outs = todo.pop()
        for arc in kaldifst.ArcIterator(fst, state):
            if arc.nextstate == fst.start:
                continue
            step = (ins + (arc.ilabel,), outs + ((arc.olabel,) if arc.olabel else ()))
            if arc.nextstate == target:
                found.append(step)
            else:
                todo.append((arc.nextstate, *step))
    return found


def test_hlg_builds_from_an_arpa_lm_with_no_disambiguation_left(tmp_path):
    build_arpa(SENTENCES, tmp_path / "lm.arpa", order=3)
    grammar = arpa_grammar(tmp_path / "lm.arpa", lm_weight=0.5, word_score=1.0)
    hlg = build_hlg(Tokenizer.char(), grammar)
    labels = {a.ilabel for s in kaldifst.StateIterator(hlg) for a in kaldifst.ArcIterator(hlg, s)}
    assert hlg.num_states > 10 and max(labels) <= 29  # tokens + 1; no #k left
    words = {a.olabel for s in kaldifst.StateIterator(hlg) for a in kaldifst.ArcIterator(hlg, s)}
    assert words - {0} == {grammar.words[w] for w in ("THE", "CAT", "SAT", "DOG", "ON", "MAT", "A")}


def test_lm_weight_scales_the_grammar(tmp_path):
    build_arpa(SENTENCES, tmp_path / "lm.arpa", order=2)
    costs = []
    for weight in (1.0, 2.0):
        g = arpa_grammar(tmp_path / "lm.arpa", lm_weight=weight).fst
        costs.append(sorted(float(a.weight.value) for a in kaldifst.ArcIterator(g, g.start)))
    assert np.allclose(np.array(costs[1]), 2 * np.array(costs[0])) and max(costs[0]) > 0


def test_sherpa_with_a_one_sentence_graph_says_that_sentence(tmp_path, student, utterances):
    export_sherpa(student, tmp_path / "sherpa", CHUNK, LEFT)
    sentence = "THE CAT SAT"
    hlg = build_hlg(Tokenizer.char(), _one_sentence(sentence.split()))
    hlg.write(str(tmp_path / "HLG.fst"))
    greedy = SherpaStreamingDecoder(tmp_path / "sherpa", threads=1)
    graph = SherpaStreamingDecoder(tmp_path / "sherpa", threads=1, graph=tmp_path / "HLG.fst")
    texts = [graph(samples) for samples in utterances]
    assert texts == [sentence] * len(utterances)
    assert all(greedy(samples) != sentence for samples in utterances)  # the graph did it


def test_sherpa_with_an_lm_graph_says_only_lm_words(
    tmp_path, student, utterances, prepared_data_dir
):
    export_sherpa(student, tmp_path / "sherpa", CHUNK, LEFT)
    build_arpa(SENTENCES, tmp_path / "lm.arpa", order=3)
    out = tmp_path / "HLG.fst"
    args = ["hlg", "--lm", str(tmp_path / "lm.arpa"), "--data-dir", str(prepared_data_dir)]
    assert lm_main([*args, "--out", str(out)]) == 0
    decode = SherpaStreamingDecoder(tmp_path / "sherpa", threads=1, graph=out)
    words = {w for s in SENTENCES for w in s.split()}
    texts = [decode(samples) for samples in utterances]
    assert all(set(t.split()) <= words for t in texts) and any(texts)


def test_evaluate_hlg_rows_beside_the_beam_lm_ones(tmp_path, prepared_data_dir, make_checkpoint):
    """runtime=[onnx,sherpa-onnx-hlg] builds the HLG of beam.lm once and adds a timed
    stream-<N>ms-sherpa-onnx-hlg row per streaming model, saying only the LM's words."""
    teacher = make_checkpoint(tmp_path / "teacher.ckpt", streaming=False)
    student = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    lm = tmp_path / "lm.arpa"
    assert lm_main(["build", "--data-dir", str(prepared_data_dir), "--out", str(lm)]) == 0
    overrides = [
        *evaluate_overrides(
            prepared_data_dir, tmp_path / "eval", teacher, student, "[onnx,sherpa-onnx-hlg]"
        ),
        "decoding=[greedy,beam_lm]",
        f"beam.lm={lm}",
        f"beam.cache_dir={tmp_path / 'cache'}",
    ]
    results = evaluate(compose("evaluate", overrides))
    rows = [r for r in results["rows"] if r["model"] == "student_kd"]
    assert [(r["mode"], r["runtime"], r.get("decoding")) for r in rows] == [
        ("full", "onnx", None),
        ("stream-160ms", "onnx", None),
        ("full-beam_lm", "onnx", "beam_lm"),
        ("stream-160ms-beam_lm", "onnx", "beam_lm"),
        ("stream-160ms-sherpa-onnx-hlg", "sherpa-onnx-hlg", "hlg"),
    ]
    hlg_row, beam_row = rows[4], rows[3]
    assert hlg_row["rtf"] > 0 and hlg_row["num_utts"] == beam_row["num_utts"]
    assert "HLG search" in hlg_row["rtf_scope"] and "beam search" in results["meta"]["rtf_scope"]
    assert not any(r["model"] == "teacher" and "hlg" in r["mode"] for r in results["rows"])
    [graph] = results["meta"]["hlg"]["graphs"]
    assert Path(graph).parent == tmp_path / "eval" / "sherpa" and Path(graph).is_file()
    hyps = tmp_path / "eval" / "hyps" / "student_kd.test.stream-160ms-sherpa-onnx-hlg.tsv"
    words = set(arpa_words(lm))
    said = [line.split("\t")[2].split() for line in hyps.read_text().splitlines()[1:]]
    assert all(set(s) <= words for s in said) and any(said)
    with pytest.raises(ConfigError, match="needs a graph"):
        evaluate(compose("evaluate", overrides[:-3]))  # no beam.lm, no hlg.graph
