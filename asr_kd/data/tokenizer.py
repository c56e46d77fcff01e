"""Text normalisation and the CTC tokenizer (characters or sentencepiece BPE); blank is id 0.

A tokenizer built from a foreign teacher's vocabulary (:mod:`asr_kd.data.teacher_vocab`,
``tokenizer=from_teacher``) carries ``teacher``: the teacher id of every student id
(``teacher["ids"]``, student id 0 = the teacher's blank), the teacher's vocabulary size, whether
it spells in lower case, and, for a piece vocabulary (Parakeet's SentencePiece), the teacher's
own ``tokenizer.json`` that segments a text exactly as the teacher was trained to.

The alphabet is LibriSpeech's: upper-case A-Z, the apostrophe and the space.
:func:`normalize_text` maps a transcript onto it as far as it safely can (case, typographic
apostrophes, white space); anything still outside it is for the caller to report
(:func:`outside_alphabet`), never silently dropped.

Usage:
    tok = Tokenizer.char()                                  # 29 ids: <blk>, ▁ (space), ', A-Z
    tok = Tokenizer.train_bpe(train_texts, vocab_size=500)  # sentencepiece BPE, <blk> = 0
    ids = tok.encode("IT'S A TEST"); text = tok.decode(ids)
    tok.save("DATA/lang"); tok = Tokenizer.load("DATA/lang")
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import string
from collections.abc import Iterable, Sequence
from pathlib import Path

from asr_kd.errors import ConfigError, MissingFileError

__all__ = ["ALPHABET", "BLANK", "SPACE", "Tokenizer", "normalize_text", "outside_alphabet"]

ALPHABET = frozenset(string.ascii_uppercase + "' ")
BLANK = "<blk>"
SPACE = "▁"  # sentencepiece's word-boundary mark, used by the char tokenizer too
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Upper case, typographic apostrophes to ``'``, runs of white space to one space, stripped.

    >>> normalize_text("  it\u2019s  a\\tTest ")
    "IT'S A TEST"
    """
    return _SPACES.sub(" ", text.translate(_APOSTROPHES).upper()).strip()


def outside_alphabet(text: str) -> list[str]:
    """The sorted distinct characters of ``text`` that are not in :data:`ALPHABET`."""
    return sorted(set(text) - ALPHABET)


class Tokenizer:
    """CTC tokenizer: ``kind`` is ``"char"`` or ``"bpe"``; id 0 is the blank.

    Build with :meth:`char`, :meth:`train_bpe` or :meth:`from_dict`/:meth:`load`.
    """

    blank_id = 0

    def __init__(
        self,
        kind: str,
        symbols: Sequence[str],
        bpe_model: bytes | None = None,
        teacher: dict | None = None,
    ):
        if kind not in ("char", "bpe"):
            raise ConfigError(f"tokenizer kind {kind!r}; expected 'char' or 'bpe'")
        if symbols[0] != BLANK:
            raise ValueError(f"symbol 0 is {symbols[0]!r}; the CTC blank {BLANK!r} must be id 0")
        self.kind = kind
        self.symbols = list(symbols)
        self._ids = {s: i for i, s in enumerate(self.symbols)}
        self._bpe_model = bpe_model
        self.teacher = teacher
        self._sp = self._pieces = None
        if teacher is not None and teacher.get("pieces_json"):
            from tokenizers import Tokenizer as PiecesTokenizer  # a transformers dependency

            self._pieces = PiecesTokenizer.from_str(teacher["pieces_json"])
            self._from_teacher = {t: s for s, t in enumerate(teacher["ids"])}
        elif kind == "bpe":
            import sentencepiece as spm

            if bpe_model is None:
                raise ValueError("a bpe tokenizer needs its sentencepiece model bytes")
            self._sp = spm.SentencePieceProcessor(model_proto=bpe_model)

    @classmethod
    def char(cls) -> Tokenizer:
        """Characters: ``<blk>``, ``▁`` (space), ``'``, ``A``..``Z`` (29 ids)."""
        return cls("char", [BLANK, SPACE, "'", *string.ascii_uppercase])

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int = 500) -> Tokenizer:
        """Train sentencepiece BPE on normalised ``texts``; ``vocab_size`` counts the blank.

        The vocabulary may come out smaller than asked when the texts are too few to fill it.
        Trained in memory, so the model bytes (and the fingerprint) depend only on the texts.
        """
        import sentencepiece as spm

        texts = [t for t in texts if t]
        if not texts:
            raise ConfigError("cannot train a BPE tokenizer on no text")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # tiny corpora (tests) cannot fill 500 pieces
            character_coverage=1.0,
            normalization_rule_name="identity",  # the text is normalised already
            pad_id=0,
            pad_piece=BLANK,  # a control piece: never produced by encode, dropped by decode
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            num_threads=1,
            minloglevel=2,
        )
        proto = model.getvalue()
        sp = spm.SentencePieceProcessor(model_proto=proto)
        return cls("bpe", [sp.id_to_piece(i) for i in range(sp.get_piece_size())], proto)

    @property
    def vocab_size(self) -> int:
        """Number of ids, including the blank."""
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        """Ids of a normalised text (no blanks); raises ``ValueError`` naming unknown characters."""
        if self._pieces is not None:
            return self._encode_pieces(text)
        if self._sp is not None:
            bad = outside_alphabet(text)
            if bad:
                raise ValueError(f"characters {bad} outside the alphabet in {text!r}")
            return self._sp.encode(text, out_type=int)
        try:
            return [self._ids[SPACE if c == " " else c] for c in text]
        except KeyError as error:
            raise ValueError(
                f"character {error.args[0]!r} not in the tokenizer: {text!r}"
            ) from None

    def _encode_pieces(self, text: str) -> list[int]:
        """A teacher's piece vocabulary: the teacher's own segmentation, mapped to student ids."""
        lower = self.teacher.get("lower", False)
        found = self._pieces.encode(text.lower() if lower else text, add_special_tokens=False)
        ids = [self._from_teacher.get(t) for t in found.ids]
        if None in ids:
            bad = sorted({p for p, i in zip(found.tokens, ids, strict=True) if i is None})
            raise ValueError(f"pieces {bad} of {text!r} are not in the tokenizer")
        return ids

    def cannot_spell(self, text: str) -> list[str]:
        """The sorted distinct characters of a normalised ``text`` this tokenizer cannot encode.

        >>> Tokenizer.char().cannot_spell("IT'S 4 YOU!")
        ['!', '4']
        """
        if self._sp is not None:
            return outside_alphabet(text)
        bad = []
        for char in sorted(set(text) - {" "}):
            try:
                self.encode(char)
            except ValueError:
                bad.append(char)
        return bad

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (blanks ignored; CTC collapsing is the decoder's job)."""
        ids = [int(i) for i in ids if int(i) != self.blank_id]
        if self._pieces is not None:
            text = "".join(self.symbols[i] for i in ids).replace(SPACE, " ")
            return normalize_text(text)
        if self._sp is not None:
            return self._sp.decode(ids)
        text = "".join(self.symbols[i] for i in ids).replace(SPACE, " ")
        return _SPACES.sub(" ", text).strip()

    def to_dict(self) -> dict:
        """JSON-able and self-contained (the BPE model travels as base64)."""
        d = {"kind": self.kind, "symbols": self.symbols}
        if self._bpe_model is not None:
            d["bpe_model"] = base64.b64encode(self._bpe_model).decode("ascii")
        if self.teacher is not None:
            d["teacher"] = self.teacher
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        model = d.get("bpe_model")
        bpe_model = base64.b64decode(model) if model else None
        return cls(d["kind"], d["symbols"], bpe_model, d.get("teacher"))

    @property
    def fingerprint(self) -> str:
        """Short hash of :meth:`to_dict`: equal tokenizers have equal fingerprints."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def save(self, lang_dir: str | Path) -> None:
        """Write ``tokenizer.json`` (and ``bpe.model`` for BPE, for other tools) to ``lang_dir``."""
        lang_dir = Path(lang_dir)
        lang_dir.mkdir(parents=True, exist_ok=True)
        (lang_dir / "tokenizer.json").write_text(json.dumps(self.to_dict()) + "\n")
        if self._bpe_model is not None:
            (lang_dir / "bpe.model").write_bytes(self._bpe_model)

    @classmethod
    def load(cls, lang_dir: str | Path) -> Tokenizer:
        path = Path(lang_dir) / "tokenizer.json"
        if not path.is_file():
            raise MissingFileError(f"no tokenizer at {path}: run asr-kd-prepare first")
        return cls.from_dict(json.loads(path.read_text()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, {self.fingerprint})"
