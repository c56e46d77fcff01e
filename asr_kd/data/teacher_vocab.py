"""A foreign teacher's vocabulary -> the student's tokenizer, and the map between their ids.

A teacher from transformers (``hf:<dir or hub id>[@revision]``, any ``AutoModelForCTC``) comes
with its own ids: wav2vec2-style character vocabularies (``<pad>`` = the CTC blank, ``|`` the
word separator, ``<s>``/``</s>``/``<unk>`` specials) and Parakeet's SentencePiece pieces (blank =
the last id). :func:`teacher_vocab` builds the student :class:`~asr_kd.data.tokenizer.Tokenizer`
from it, so that teacher and student share every character or piece:

- student id 0 is ``<blk>`` and stands for the teacher's blank (``config.pad_token_id``);
- the teacher's other tokens follow in the teacher's order, minus its specials (which the
  student can never emit); ``|`` becomes ``▁`` (our word mark), a lower-case character vocabulary
  is upper-cased (our transcripts are), a piece vocabulary is segmented by the teacher's own
  ``tokenizer.json`` (lower-cased first when the teacher spells in lower case);
- ``teacher_to_student[t]`` is the student id of teacher id ``t``, -1 for a special: the
  posterior mass of those ids joins the top-k store's "other" bucket (it is in no student id).

Only the tokenizer and the config are read here (no weights): ``asr-kd-prepare`` runs it.

Usage:
    vocab = teacher_vocab("hf:exp/hf_teacher")                # or "hf:facebook/...@<revision>"
    vocab.tokenizer.encode("IT'S A TEST"); vocab.teacher_to_student[vocab.blank_id]   # -> 0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asr_kd.data.tokenizer import BLANK, SPACE, Tokenizer
from asr_kd.errors import ConfigError, MissingFileError

__all__ = [
    "HF_PREFIX",
    "HfSource",
    "TeacherVocab",
    "is_hf_source",
    "parse_hf_source",
    "teacher_vocab",
]

HF_PREFIX = "hf:"
_WORD_DELIMITER = "|"


def is_hf_source(source) -> bool:
    """Whether a ``teacher_ckpt`` / ``--ckpt`` value names a transformers model (``hf:...``).

    >>> is_hf_source("hf:facebook/wav2vec2-base-960h"), is_hf_source("exp/t/last.ckpt")
    (True, False)
    """
    return isinstance(source, str) and source.startswith(HF_PREFIX)


@dataclass(frozen=True)
class HfSource:
    """Where a transformers model is: a local directory (read with no network) or a hub id."""

    name: str  # the directory or hub id, as given
    revision: str | None  # a hub revision (branch, tag, commit); None = the default

    @property
    def local(self) -> bool:
        return Path(self.name).is_dir()

    def from_pretrained_kwargs(self) -> dict:
        """``revision`` and ``local_files_only`` (a directory never touches the network)."""
        kwargs: dict = {"local_files_only": True} if self.local else {}
        if self.revision is not None:
            kwargs["revision"] = self.revision
        return kwargs

    def __str__(self) -> str:
        return HF_PREFIX + self.name + (f"@{self.revision}" if self.revision else "")


def require_transformers() -> None:
    """``ConfigError`` with the install command when transformers is not installed."""
    try:
        import transformers  # noqa: F401
    except ImportError as error:
        raise ConfigError(
            f"a transformers model (hf:...) needs the transformers package ({error}); install "
            "it with: pip install 'asr_kd[hf]'"
        ) from None


def parse_hf_source(source: str) -> HfSource:
    """``hf:<dir or hub id>[@revision]`` -> :class:`HfSource`.

    >>> parse_hf_source("hf:nvidia/parakeet-ctc-0.6b@main")
    HfSource(name='nvidia/parakeet-ctc-0.6b', revision='main')
    """
    if not is_hf_source(source):
        raise ConfigError(f"{source!r} is not a transformers model: expected hf:<dir or hub id>")
    name, _, revision = source[len(HF_PREFIX) :].partition("@")
    if not name:
        raise ConfigError(f"{source!r} names no model: expected hf:<dir or hub id>[@revision]")
    require_transformers()
    if not Path(name).is_dir() and (name.startswith((".", "/")) or name.count("/") > 1):
        raise MissingFileError(
            f"{source}: no directory {name} (expected a save_pretrained directory, or a hub id "
            "such as facebook/wav2vec2-base-960h)"
        )
    return HfSource(name, revision or None)


@dataclass(frozen=True)
class TeacherVocab:
    """A teacher's vocabulary and the student tokenizer made from it."""

    tokenizer: Tokenizer  # the student's: id 0 = blank, then the teacher's usable tokens
    teacher_to_student: tuple[int, ...]  # (V_t,) student id per teacher id, -1 = special
    blank_id: int  # the teacher's blank id
    tokens: tuple[str, ...]  # (V_t,) the teacher's token per id ("" where it has none)
    source: str


def _load_tokenizer(source: HfSource):
    """The teacher's transformers tokenizer (the processor's, when it has one)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.name, **source.from_pretrained_kwargs())
    except (OSError, ValueError) as error:
        raise MissingFileError(
            f"{source}: no tokenizer could be loaded ({str(error).splitlines()[0][:200]}); "
            "expected the tokenizer files save_pretrained writes (vocab.json or tokenizer.json)"
        ) from error


def _blank_id(source: HfSource, hf_tokenizer) -> tuple[int, int]:
    """(the blank id, the model's vocabulary size) from the config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source.name, **source.from_pretrained_kwargs())
    blank = getattr(config, "pad_token_id", None)
    blank = hf_tokenizer.pad_token_id if blank is None else blank
    if blank is None:
        raise ConfigError(f"{source}: neither config.pad_token_id nor the tokenizer names a blank")
    return int(blank), int(config.vocab_size)


def _is_char_vocab(usable: list[str]) -> bool:
    return all(len(t) == 1 or t == _WORD_DELIMITER for t in usable)


def teacher_vocab(source: str) -> TeacherVocab:
    """Read the teacher's tokenizer and config and build the student tokenizer (module doc)."""
    where = parse_hf_source(source)
    hf_tok = _load_tokenizer(where)
    blank, vocab_size = _blank_id(where, hf_tok)
    by_id = {i: t for t, i in hf_tok.get_vocab().items() if i < vocab_size}
    tokens = [by_id.get(i, "") for i in range(vocab_size)]
    specials = set(hf_tok.all_special_tokens) - {tokens[blank], _WORD_DELIMITER}
    usable = [i for i, t in enumerate(tokens) if i != blank and t and t not in specials]
    if not usable:
        raise ConfigError(f"{where}: its vocabulary holds no token besides blank and specials")
    cased = "".join(c for i in usable for c in tokens[i] if c.isalpha())
    lower = bool(cased) and cased == cased.lower()
    char = _is_char_vocab([tokens[i] for i in usable])
    if char:
        symbols = [
            SPACE if t == _WORD_DELIMITER else t.upper() for t in (tokens[i] for i in usable)
        ]
    else:
        symbols = [tokens[i] for i in usable]
    if len(set(symbols)) != len(symbols):
        raise ConfigError(f"{where}: its vocabulary has tokens equal up to case; cannot map them")
    teacher = {"ids": [blank, *usable], "vocab_size": vocab_size, "lower": lower}
    if not char:
        teacher["pieces_json"] = hf_tok.backend_tokenizer.to_str()
    tokenizer = Tokenizer("char" if char else "bpe", [BLANK, *symbols], teacher=teacher)
    to_student = [-1] * vocab_size
    for student_id, teacher_id in enumerate(teacher["ids"]):
        to_student[teacher_id] = student_id
    return TeacherVocab(tokenizer, tuple(to_student), blank, tuple(tokens), str(where))
