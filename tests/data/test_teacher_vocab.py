"""The student tokenizer built from a teacher's vocabulary (asr_kd/data/teacher_vocab.py): its
ids stand for the teacher's, character by character and piece by piece; blank and specials
are mapped explicitly; what the teacher cannot spell is found."""

from __future__ import annotations

import pytest

from asr_kd.data.teacher_vocab import parse_hf_source, teacher_vocab
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError

TEXT = "IT'S A TEST OF THE SYSTEM"


def _hf_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


@pytest.mark.parametrize("family", ["wav2vec2_conformer", "hubert", "parakeet"])
def test_every_teacher_token_keeps_its_id_through_the_student(hf_model_dir, family):
    vocab = teacher_vocab(f"hf:{hf_model_dir(family)}")
    tok = vocab.tokenizer
    specials = set(_hf_tokenizer(hf_model_dir(family)).all_special_tokens) - {"<pad>", "|"}
    assert vocab.teacher_to_student[vocab.blank_id] == 0 == tok.blank_id
    for teacher_id, token in enumerate(vocab.tokens):
        student_id = vocab.teacher_to_student[teacher_id]
        if teacher_id == vocab.blank_id:
            continue
        if token in specials:  # <s>, </s>, <unk>: no student id, their mass goes to "other"
            assert student_id == -1, token
            continue
        assert tok.teacher["ids"][student_id] == teacher_id
        expected = {"|": "▁"}.get(token, token.upper() if tok.kind == "char" else token)
        assert tok.symbols[student_id] == expected


@pytest.mark.parametrize("family", ["wav2vec2_conformer", "parakeet"])
def test_a_text_encodes_to_the_teachers_own_ids(hf_model_dir, family):
    vocab = teacher_vocab(f"hf:{hf_model_dir(family)}")
    hf = _hf_tokenizer(hf_model_dir(family))
    student_ids = vocab.tokenizer.encode(TEXT)
    as_teacher = [vocab.tokenizer.teacher["ids"][i] for i in student_ids]
    if family == "parakeet":  # lower-case pieces, segmented by the teacher's tokenizer.json
        assert as_teacher == hf.encode(TEXT.lower(), add_special_tokens=False)
    else:
        assert as_teacher == hf(TEXT.replace(" ", "|")).input_ids
    assert vocab.tokenizer.decode(student_ids) == TEXT


def test_the_tokenizer_round_trips_through_its_dict(hf_model_dir):
    tok = teacher_vocab(f"hf:{hf_model_dir('parakeet')}").tokenizer
    again = Tokenizer.from_dict(tok.to_dict())
    assert again == tok and again.encode(TEXT) == tok.encode(TEXT)


def test_unspellable_characters_are_named_not_crashed_on(hf_model_dir):
    hubert = teacher_vocab(f"hf:{hf_model_dir('hubert')}").tokenizer  # no apostrophe
    assert hubert.cannot_spell(TEXT) == ["'"]
    assert hubert.cannot_spell("A TEST") == []
    with pytest.raises(ValueError, match="'"):
        hubert.encode(TEXT)


def test_a_revision_is_parsed_and_a_bad_source_refused():
    assert parse_hf_source("hf:facebook/x@abc").revision == "abc"
    with pytest.raises(ConfigError, match="names no model"):
        parse_hf_source("hf:@main")
