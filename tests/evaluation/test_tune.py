"""Tuning beam_lm on dev (asr_kd.evaluation.tune) and the asr-kd-lm command that builds the LM
and runs the grid."""

from __future__ import annotations

import torch

from asr_kd.cli.lm import main
from asr_kd.data.datamodule import load_cuts
from asr_kd.evaluation.tune import dev_log_probs, grid_search
from asr_kd.inference.lm import arpa_words, read_arpa, subset_texts
from asr_kd.inference.search import BeamSettings
from asr_kd.models.loading import load_model


def test_build_from_training_transcripts_never_dev_or_test(tmp_path, prepared_data_dir, capsys):
    out = tmp_path / "lm" / "2gram.arpa"
    assert (
        main(["build", "--data-dir", str(prepared_data_dir), "--order", "2", "--out", str(out)])
        == 0
    )
    train = set(" ".join(subset_texts(prepared_data_dir, ["train"])).split())
    assert set(arpa_words(out)) == train
    assert sorted(read_arpa(out)) == [1, 2]
    assert capsys.readouterr().out.startswith(f"{out}: 1-grams {len(train) + 3}, 2-grams ")


def test_build_from_a_text_file_normalises_it(tmp_path, capsys):
    text = tmp_path / "extra.txt"
    text.write_text("It’s  a test\nanother  TEST\n\n")
    out = tmp_path / "lm.arpa"
    assert main(["build", "--text", str(text), "--out", str(out)]) == 0
    assert arpa_words(out) == ["A", "ANOTHER", "IT'S", "TEST"]


def test_build_without_text_is_one_error_line(tmp_path, capsys):
    assert main(["build", "--out", str(tmp_path / "lm.arpa")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "error: asr-kd-lm build needs --data-dir DATA (its training transcripts) or --text FILE\n"
    )


def test_the_grid_is_decoded_on_log_probs_computed_once(
    tmp_path, prepared_data_dir, make_checkpoint, monkeypatch
):
    loaded = load_model(make_checkpoint(tmp_path / "student.ckpt", streaming=True))
    calls = []
    forward = type(loaded.model).forward
    monkeypatch.setattr(
        type(loaded.model), "forward", lambda self, *a: calls.append(a[2:]) or forward(self, *a)
    )
    utts = dev_log_probs(loaded, str(prepared_data_dir), "dev", chunk_size=4, left_chunks=2)
    assert calls and all(c == (4, 2) for c in calls)  # the chunk mask of the streaming path
    monkeypatch.undo()
    assert len(utts) == len(list(load_cuts(prepared_data_dir, "dev")))
    arpa = tmp_path / "lm.arpa"
    assert main(["build", "--data-dir", str(prepared_data_dir), "--out", str(arpa)]) == 0
    beam = BeamSettings(size=4, lm=str(arpa), cache_dir=str(tmp_path / "cache"))
    rows = grid_search(utts, loaded.tokenizer, beam, [0.0, 2.0], [-1.0, 1.0])
    assert sorted((r["lm_weight"], r["word_score"]) for r in rows) == [
        (0.0, -1.0), (0.0, 1.0), (2.0, -1.0), (2.0, 1.0)
    ]  # fmt: skip
    assert [r["wer"] for r in rows] == sorted(r["wer"] for r in rows)
    assert all(isinstance(u.log_probs, torch.Tensor) and u.text for u in utts)


def test_tune_prints_the_grid_and_the_best_overrides(
    tmp_path, prepared_data_dir, make_checkpoint, capsys, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))  # the LM cache of this test
    ckpt = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    arpa = tmp_path / "lm.arpa"
    main(["build", "--data-dir", str(prepared_data_dir), "--out", str(arpa)])
    capsys.readouterr()
    args = ["tune", "--ckpt", str(ckpt), "--data-dir", str(prepared_data_dir), "--lm", str(arpa)]
    grid = ["--chunk-ms", "160", "--lm-weights", "0,1", "--word-scores", "-1,0"]  # regression:
    # argparse read "-1,0" as an unknown option, so the recipe's default grid was refused
    out = tmp_path / "tuned.txt"
    assert main([*args, *grid, "--overrides-out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["lm_weight", "word_score", "WER", "sub", "del", "ins"]
    assert len(lines) == 6 and lines[-1].startswith("best on dev: beam.lm_weight=")
    best = lines[1].split()
    assert f"beam.lm_weight={best[0]} beam.word_score={best[1]}" in lines[-1]
    assert out.read_text() == f"beam.lm_weight={best[0]}\nbeam.word_score={best[1]}\n"
    assert main([*args, "--chunk-ms", "150"]) == 2
    assert "150" in capsys.readouterr().err
