"""Tokenizer: char and BPE round trips, blank id 0, to_dict/from_dict, fingerprints."""

from __future__ import annotations

import json

import pytest

from asr_kd.data.tokenizer import Tokenizer, normalize_text, outside_alphabet

TEXTS = [
    "IT'S A TEST OF THE TOKENIZER",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "SHE SAID THAT HE WOULDN'T COME BACK TODAY",
    "A B C THE THE THE",
] * 20


def test_normalize_text_maps_case_apostrophes_and_spaces():
    assert normalize_text("  it\u2019s  a\tTest \n") == "IT'S A TEST"
    assert outside_alphabet("HELLO, WORLD 42") == [",", "2", "4"]
    assert outside_alphabet("IT'S OK") == []


def test_char_round_trip_and_ids():
    tok = Tokenizer.char()
    assert (tok.kind, tok.vocab_size, tok.blank_id, tok.symbols[0]) == ("char", 29, 0, "<blk>")
    ids = tok.encode("IT'S A")
    assert len(ids) == 6 and 0 not in ids and ids[4] == tok.symbols.index("▁")
    assert tok.decode(ids) == "IT'S A"
    assert tok.decode([0, *ids, 0]) == "IT'S A"  # blanks are ignored
    with pytest.raises(ValueError, match="'!'"):
        tok.encode("HI!")


def test_bpe_round_trip_blank_zero_and_size():
    tok = Tokenizer.train_bpe(TEXTS, vocab_size=60)
    assert tok.kind == "bpe" and tok.vocab_size <= 60 and tok.blank_id == 0
    assert tok.symbols[0] == "<blk>"
    for text in TEXTS[:4]:
        ids = tok.encode(text)
        assert ids and 0 not in ids and max(ids) < tok.vocab_size
        assert tok.decode(ids) == text
    with pytest.raises(ValueError, match="outside the alphabet"):
        tok.encode("HELLO, WORLD")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_dict_and_disk_round_trips_keep_the_fingerprint(kind, tmp_path):
    tok = Tokenizer.char() if kind == "char" else Tokenizer.train_bpe(TEXTS, vocab_size=60)
    d = json.loads(json.dumps(tok.to_dict()))  # JSON-able
    again = Tokenizer.from_dict(d)
    assert again == tok and again.fingerprint == tok.fingerprint
    assert again.encode(TEXTS[1]) == tok.encode(TEXTS[1])
    tok.save(tmp_path / "lang")
    assert (tmp_path / "lang" / "bpe.model").exists() == (kind == "bpe")
    assert Tokenizer.load(tmp_path / "lang").fingerprint == tok.fingerprint


def test_fingerprints_tell_tokenizers_apart_and_bpe_training_is_reproducible():
    a = Tokenizer.train_bpe(TEXTS, vocab_size=60)
    assert Tokenizer.train_bpe(TEXTS, vocab_size=60).fingerprint == a.fingerprint
    assert Tokenizer.train_bpe(TEXTS, vocab_size=50).fingerprint != a.fingerprint
    assert Tokenizer.char().fingerprint != a.fingerprint


def test_loading_from_a_dir_without_tokenizer_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)
