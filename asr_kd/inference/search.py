"""CTC searches: log-probs -> text, offline or over chunks; one registry entry per method.

=========  ==================================================================================
decoding   what it is
=========  ==================================================================================
greedy     best path: argmax per frame, repeats merged, blanks dropped
beam       CTC prefix beam search, lexicon-free, no LM (flashlight's ``LexiconFreeDecoder``)
beam_lm    beam search constrained to a lexicon, scored by a word n-gram LM (ARPA, KenLM
           inside flashlight-text): ``lm_weight`` x LM log-prob + ``word_score`` per word;
           without ``lm`` the lexicon alone
beam_hotwords     ``beam`` biased per token towards ``hotwords`` (:mod:`asr_kd.inference.hotwords`)
beam_lm_hotwords  ``beam_lm`` biased per word towards ``hotwords`` (added to the lexicon)
=========  ==================================================================================

A :class:`CtcSearch` (``DECODINGS[name](tokenizer, beam)``) makes :class:`SearchStream` s:
``extend(log_probs)`` with the (n, V) log-probs of the frames that just arrived, ``text`` (the
partial transcript), ``finalize()`` (the final one). Offline decoding is one ``extend`` of the
whole utterance, so a streaming and an offline search over the same log-probs agree exactly: the
beam is carried from chunk to chunk (flashlight's ``decode_begin`` / ``decode_step`` /
``decode_end``), never re-decoding the prefix.

The beam searches use ``torchaudio.models.decoder.ctc_decoder`` (flashlight-text). Its tokens
are ours, in id order. A lexicon's words are spelled with our tokenizer
(``librispeech-lexicon.txt``'s phone spellings are dropped), each spelling ending in
:func:`word_end` (``▁`` for characters, the blank for BPE), flashlight's "silence".

Usage:
    search = DECODINGS["beam_lm"](tokenizer, BeamSettings(lm="lm/3gram.arpa", lm_weight=0.5))
    text = search.offline(log_probs)                  # (T, V) float32, torch or numpy
    stream = search.stream()                          # one utterance
    for chunk in chunks: stream.extend(chunk); print(stream.text)
    text = stream.finalize()
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from asr_kd.checkpoint import atomic_write
from asr_kd.errors import ConfigError
from asr_kd.inference.hotwords import ContextGraph, HotwordLM, read_hotwords
from asr_kd.inference.lm import arpa_file, arpa_words, lexicon_words
from asr_kd.models.decode import collapse_ids, greedy_ctc

__all__ = [
    "DECODINGS",
    "BeamSearch",
    "BeamSettings",
    "CtcSearch",
    "GreedySearch",
    "GreedyTokenStream",
    "SearchStream",
    "WordText",
    "hotword_decoding",
    "make_search",
    "mode_suffix",
    "row_decoding",
    "spell_lexicon",
    "word_end",
]

SPACE = "▁"
UNKNOWN = "<unk>"  # sentencepiece's piece for what it cannot segment


@dataclass(frozen=True)
class BeamSettings:
    """The beam searches' knobs (``conf/evaluate.yaml``'s ``beam`` documents each)."""

    size: int = 200  # conf/evaluate.yaml's beam.size says why
    threshold: float = 25.0  # hypotheses this far (log) below the best are dropped
    size_token: int | None = None  # tokens tried per frame: the most likely N (None: all)
    lm: str | None = None  # ARPA (.arpa, .arpa.gz) or KenLM binary; beam_lm only
    lexicon: str | None = None  # None: the LM's unigram words (beam_lm needs one of the two)
    lm_weight: float = 0.5
    word_score: float = 0.0
    cache_dir: str = "~/.cache/asr_kd/lm"  # decompressed .arpa.gz and spelled lexicons
    prune_frames: int | None = None  # streaming: commit and forget history this far back
    hotwords: str | None = None  # WORD or WORD<TAB>boost lines; the *_hotwords searches only
    hotword_boost: float = 3.0  # log-score bonus per hotword word where the line gives none


class SearchStream(ABC):
    """One utterance's search over frames arriving in pieces."""

    @abstractmethod
    def extend(self, log_probs: Any) -> None:
        """(n, V) log-probs (torch or numpy) of the next n frames (n may be 0)."""

    @property
    @abstractmethod
    def text(self) -> str:
        """The partial transcript of the frames so far."""

    def finalize(self) -> str:
        """End of utterance: the final transcript."""
        return self.text


class CtcSearch(ABC):
    """A search method over a tokenizer's CTC log-probs (module docstring)."""

    name: ClassVar[str]
    with_hotwords: ClassVar[str | None] = None  # the DECODINGS name of this search + hotwords

    def __init__(self, tokenizer: Any, beam: BeamSettings | None = None) -> None:
        self.tokenizer = tokenizer
        self.beam = beam or BeamSettings()

    @abstractmethod
    def stream(self) -> SearchStream:
        """A new utterance's search state."""

    def offline(self, log_probs: Any) -> str:
        """(T, V) log-probs of a whole utterance -> its text."""
        stream = self.stream()
        stream.extend(log_probs)
        return stream.finalize()

    def batch_texts(self, log_probs: torch.Tensor, lens: torch.Tensor) -> list[str]:
        """(B, T, V) log-probs with (B,) valid frames -> B texts, one utterance at a time."""
        log_probs = log_probs.detach().float().cpu()
        return [self.offline(log_probs[b, : int(n)]) for b, n in enumerate(lens.tolist())]


class WordText:
    """A transcript whose token ids arrive in pieces, as text at a cost that does not grow with
    its length: ids are decoded up to the last word start (a token spelled with ``▁``: the space
    of a character vocabulary, a BPE piece that begins a word) once, when committed, and kept
    as text; only the ids after it are decoded again with each new tail.

    >>> from asr_kd.data.tokenizer import Tokenizer
    >>> tok = Tokenizer.char()
    >>> words = WordText(tok)
    >>> words.commit(tok.encode("THE CA")); words.done, words.text(tok.encode("T SAT"))
    ('THE', 'THE CAT SAT')
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._word_start = np.array([s.startswith(SPACE) for s in tokenizer.symbols])
        self.done = ""  # text of the ids before the last word start
        self._pending: list[int] = []  # committed ids from the last word start on

    def commit(self, ids: list[int]) -> None:
        """Append ids that no later piece changes."""
        ids = self._pending + list(ids)
        starts = np.flatnonzero(self._word_start[np.asarray(ids, dtype=np.int64)]) if ids else []
        if len(starts) and starts[-1] > 0:
            self.done = _join(self.done, self._decode(ids[: starts[-1]]))
            ids = ids[starts[-1] :]
        self._pending = ids

    def text(self, tail: list[int]) -> str:
        """The committed text followed by ``tail``, ids that may still change."""
        return _join(self.done, self._decode(self._pending + list(tail)))

    def _decode(self, ids: list[int]) -> str:
        return _text(self.tokenizer, ids)


def _text(tokenizer: Any, ids: list[int]) -> str:
    """Text of token ids, single-spaced; the word boundaries flashlight puts first and last (a
    BPE vocabulary's bare ``▁`` decodes to a space) are stripped."""
    return " ".join(tokenizer.decode(ids).split()) if ids else ""


def _join(left: str, right: str) -> str:
    return f"{left} {right}" if left and right else left or right


class GreedyTokenStream(SearchStream):
    """Greedy CTC over the frames of one utterance arriving in pieces: a token repeated across a
    piece boundary is merged, as offline; a greedy token is final when emitted, so the partial
    transcript grows through :class:`WordText` and the final one decodes every token once.

    >>> class Chars:
    ...     blank_id = 0
    ...     symbols = ["_", "a", "b"]
    ...     def decode(self, ids): return "".join(self.symbols[i] for i in ids)
    >>> stream = GreedyTokenStream(Chars())
    >>> stream.extend_ids(np.array([1, 1])); stream.extend_ids(np.array([1, 0, 2])); stream.text
    'ab'
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self._last = -1
        self._words = WordText(tokenizer)

    def extend(self, log_probs: Any) -> None:
        ids = log_probs.argmax(-1)
        self.extend_ids(ids.cpu().numpy() if isinstance(ids, torch.Tensor) else ids)

    def extend_ids(self, frame_ids: np.ndarray) -> None:
        """(n,) per-frame argmax ids of the next n frames (n may be 0)."""
        if frame_ids.size:
            ids = collapse_ids(frame_ids, self._last, self.tokenizer.blank_id)
            self.token_ids += ids
            self._words.commit(ids)
            self._last = int(frame_ids[-1])

    @property
    def text(self) -> str:
        return self._words.text([])

    def finalize(self) -> str:
        return self.tokenizer.decode(self.token_ids)


class GreedySearch(CtcSearch):
    """Best path (the default everywhere)."""

    name = "greedy"

    def stream(self) -> GreedyTokenStream:
        return GreedyTokenStream(self.tokenizer)

    def batch_texts(self, log_probs: torch.Tensor, lens: torch.Tensor) -> list[str]:
        ids = greedy_ctc(log_probs, lens, blank_id=self.tokenizer.blank_id)  # batched argmax
        return [self.tokenizer.decode(seq) for seq in ids]


class BeamStream(SearchStream):
    """flashlight's incremental decoding of one utterance; its decoder is the search's, so a
    search runs one stream at a time (a batch-1 decoder's).

    ``extend`` costs the same per frame however much audio came before (flashlight's beam is
    a fixed size). ``text`` (a partial transcript) traces flashlight's best hypothesis back to
    the first frame it keeps: read it every chunk over a long utterance and its cost grows
    with the audio, unless ``BeamSettings.prune_frames`` = P is set: then every P frames the
    best path is committed up to P frames back (flashlight moves further back, to a word
    boundary), its text kept (:class:`WordText`), and flashlight's history before it dropped
    (``prune``), so a partial transcript costs the same at any length; the transcript can then
    differ from the offline search's where the best path of P frames ago is not the final
    one's. Without it (the default) the final transcript equals the offline search's exactly.
    ``reads`` counts the traces of the best hypothesis (partial transcripts and commits).
    """

    def __init__(self, search: BeamSearch) -> None:
        self.search = search
        self.decoder = search.decoder
        self.decoder.decode_begin()
        self._final: str | None = None
        self._ids: list[int] = []  # token ids of the committed frames
        self._last = -1  # the last committed frame's token (flashlight's buffer frame 0)
        self._words = WordText(search.tokenizer)  # the committed ids as text
        self._buffered = 0  # frames in flashlight's buffer after its first
        self.commits = self.reads = 0

    def extend(self, log_probs: Any) -> None:
        log_probs = torch.as_tensor(log_probs, dtype=torch.float32).contiguous()
        if log_probs.shape[0]:
            self.decoder.decode_step(log_probs)
            self._buffered += log_probs.shape[0]
        look_back = self.search.beam.prune_frames
        if look_back is not None:
            self._try_commit(look_back)

    def _try_commit(self, look_back: int) -> None:
        # flashlight's decoder (torchaudio wraps neither call) gives the path to the frame it
        # prunes at, which stays as the first frame of its buffer: kept once, here
        if self._buffered < 2 * look_back:
            return
        flashlight = self.decoder.decoder
        path = list(flashlight.get_best_hypothesis(look_back).tokens)
        self.reads += 1
        if len(path) < 2:  # flashlight found no word boundary in reach
            return
        ids = self._tail_ids(path)
        self._ids += ids
        self._words.commit(ids)
        self._last = path[-1]
        flashlight.prune(look_back)
        self._buffered -= len(path) - 1
        self.commits += 1

    def _tail_ids(self, path) -> list[int]:
        """Token ids of flashlight's buffer path after the committed frames."""
        frames = np.asarray(path[1:] if self.commits else path, dtype=np.int64)
        return (
            collapse_ids(frames, self._last, self.search.tokenizer.blank_id) if len(frames) else []
        )

    @property
    def text(self) -> str:
        if self._final is not None:
            return self._final
        path = self.decoder.decoder.get_best_hypothesis().tokens
        self.reads += 1
        return self._words.text(self._tail_ids(path))

    def finalize(self) -> str:
        if self._final is None:
            self.decoder.decode_end()
            best = self.decoder.decoder.get_all_final_hypothesis()
            ids = self._ids + self._tail_ids(best[0].tokens) if best else []
            self._final = _text(self.search.tokenizer, ids) if best else ""
        return self._final


class BeamSearch(CtcSearch):
    """flashlight's CTC beam search: lexicon-free without LM (``beam``), or lexicon + word LM
    (``beam_lm``)."""

    name = "beam"
    with_hotwords = "beam_hotwords"
    uses_lexicon: ClassVar[bool] = False

    def __init__(self, tokenizer: Any, beam: BeamSettings | None = None) -> None:
        super().__init__(tokenizer, beam)
        ctc_decoder = _flashlight_decoder(self.name)
        beam, symbols = self.beam, list(tokenizer.symbols)
        lexicon = lm = None
        if self.uses_lexicon:
            lm = None if beam.lm is None else str(arpa_file(beam.lm, beam.cache_dir))
            lexicon = str(self._lexicon_file(lm))
        lm, lm_weight = self._scorer(lm, lexicon)
        self.decoder = ctc_decoder(
            lexicon=lexicon,
            tokens=symbols,
            lm=lm,
            beam_size=beam.size,
            beam_size_token=beam.size_token,
            beam_threshold=beam.threshold,
            lm_weight=lm_weight,
            word_score=beam.word_score,
            blank_token=symbols[tokenizer.blank_id],
            sil_token=word_end(tokenizer),
        )

    def _scorer(self, lm: str | None, lexicon: str | None) -> tuple[Any, float]:
        """What flashlight scores words or tokens with, and its weight: the LM file as is."""
        return lm, self.beam.lm_weight

    def _extra_words(self) -> list[str]:
        """Words the lexicon gets besides its own (hotwords)."""
        return []

    def _lexicon_file(self, lm: str | None) -> Path:
        beam = self.beam
        if beam.lexicon is not None:
            words = lexicon_words(beam.lexicon)
        elif lm is not None and not lm.endswith(".bin"):
            words = arpa_words(lm)
        else:
            raise ConfigError(
                f"decoding beam_lm needs a lexicon (beam.lexicon=FILE, --lexicon FILE) or an ARPA "
                f"LM to take its words from (beam.lm=FILE.arpa[.gz], --lm FILE), got lexicon="
                f"{beam.lexicon}, lm={beam.lm}"
            )
        words = list(dict.fromkeys([*words, *self._extra_words()]))
        lines = spell_lexicon(words, self.tokenizer)
        if not lines:
            raise ConfigError(
                f"no word of {beam.lexicon or beam.lm} is spelled by {self.tokenizer}"
            )
        text = "".join(lines)
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        path = Path(beam.cache_dir).expanduser() / f"lexicon-{key}.txt"
        if not path.is_file():  # content-keyed: processes writing it at once write the same
            atomic_write(path, lambda f: f.write(text.encode("utf-8")))
        return path

    def stream(self) -> BeamStream:
        return BeamStream(self)


def _flashlight_decoder(name: str):
    """torchaudio's ``ctc_decoder``, or a ``ConfigError`` saying how to install flashlight-text."""
    try:
        from torchaudio.models.decoder import ctc_decoder

        return ctc_decoder
    except (ImportError, RuntimeError) as err:  # torchaudio raises RuntimeError without it
        raise ConfigError(
            f"decoding {name} needs flashlight-text (torchaudio's CTC beam search): "
            f"pip install 'asr_kd[lm]' ({err})"
        ) from err


class LexiconBeamSearch(BeamSearch):
    """``beam_lm``: words of the lexicon only, scored by the LM when there is one."""

    name = "beam_lm"
    with_hotwords = "beam_lm_hotwords"
    uses_lexicon = True


class HotwordBeamSearch(BeamSearch):
    """``beam_hotwords``: ``beam`` biased towards ``BeamSettings.hotwords`` per token
    (:mod:`asr_kd.inference.hotwords`)."""

    name = "beam_hotwords"

    def _hotwords(self) -> list[tuple[str, float]]:
        if self.beam.hotwords is None:
            raise ConfigError(
                f"decoding {self.name} needs a hotword file (beam.hotwords=FILE, --hotwords "
                "FILE): WORD or WORD<TAB>boost per line"
            )
        return read_hotwords(self.beam.hotwords, self.beam.hotword_boost)

    def _extra_words(self) -> list[str]:
        return [word for hotword, _ in self._hotwords() for word in hotword.split()]

    def _units(self, hotword: str, lexicon: str | None) -> list[int]:
        return [] if self.tokenizer.cannot_spell(hotword) else self.tokenizer.encode(hotword)

    def _scorer(self, lm: str | None, lexicon: str | None) -> tuple[Any, float]:
        inner = None if lm is None else _kenlm(lm, lexicon)
        sequences = []
        for hotword, boost in self._hotwords():
            units = self._units(hotword, lexicon)
            if units:
                sequences.append((tuple(units), boost * len(hotword.split()) / len(units)))
        return HotwordLM(inner, ContextGraph(sequences), self.beam.lm_weight), 1.0


class HotwordLexiconBeamSearch(HotwordBeamSearch):
    """``beam_lm_hotwords``: ``beam_lm`` biased towards ``BeamSettings.hotwords`` per word;
    a hotword the lexicon lacks is added to it."""

    name = "beam_lm_hotwords"
    with_hotwords = "beam_lm_hotwords"
    uses_lexicon = True

    def _units(self, hotword: str, lexicon: str | None) -> list[int]:
        words = _word_dict(lexicon)
        return [words.get_index(word) for word in hotword.split()]


def _word_dict(lexicon: str):
    """flashlight's word dictionary of a lexicon file, as torchaudio's decoder makes it (the
    word ids its LM is called with)."""
    from flashlight.lib.text.dictionary import create_word_dict, load_words

    return create_word_dict(load_words(lexicon))


def _kenlm(lm: str, lexicon: str | None):
    """flashlight's KenLM over the lexicon's words (or the tokens, lexicon-free)."""
    from flashlight.lib.text.decoder import KenLM

    return KenLM(lm, _word_dict(lexicon))


def word_end(tokenizer) -> str:
    """The token that ends every lexicon spelling, flashlight's "silence": ``▁`` for characters
    (the space the model emits between words), the blank for BPE (whose words begin with their
    boundary). flashlight emits a word on entering its last token and scores the frames that
    repeat it as silence, so a spelling must end in the token that repeats between words.

    >>> from asr_kd.data.tokenizer import Tokenizer
    >>> word_end(Tokenizer.char())
    '▁'
    """
    return SPACE if tokenizer.kind == "char" else tokenizer.symbols[tokenizer.blank_id]


def spell_lexicon(words, tokenizer) -> list[str]:
    """``"WORD t1 t2 ... <end>\\n"`` lines: each word spelled with ``tokenizer``, then
    :func:`word_end`; words it cannot spell (characters outside it, BPE's ``<unk>``) are left out.

    >>> from asr_kd.data.tokenizer import Tokenizer
    >>> spell_lexicon(["IT'S", "4U"], Tokenizer.char())
    ["IT'S I T ' S ▁\\n"]
    """
    lines, end = [], word_end(tokenizer)
    for word in words:
        if tokenizer.cannot_spell(word):
            continue
        spelling = [tokenizer.symbols[i] for i in tokenizer.encode(word)]
        if UNKNOWN not in spelling:
            lines.append(f"{word} {' '.join([*spelling, end])}\n")
    return lines


DECODINGS: dict[str, type[CtcSearch]] = {
    search.name: search
    for search in (
        GreedySearch,
        BeamSearch,
        LexiconBeamSearch,
        HotwordBeamSearch,
        HotwordLexiconBeamSearch,
    )
}


def make_search(name: str, tokenizer: Any, beam: BeamSettings | None = None) -> CtcSearch:
    """``DECODINGS[name](tokenizer, beam)``; ``ConfigError`` for an unknown name."""
    if name not in DECODINGS:
        raise ConfigError(f"decoding must be one of {sorted(DECODINGS)}, got {name!r}")
    return DECODINGS[name](tokenizer, beam)


def hotword_decoding(name: str) -> str:
    """The search ``name`` biased towards hotwords (``beam`` -> ``beam_hotwords``).

    >>> hotword_decoding("beam_lm"), hotword_decoding("beam_hotwords")
    ('beam_lm_hotwords', 'beam_hotwords')
    """
    biased = DECODINGS[name].with_hotwords if name in DECODINGS else None
    if biased is None:
        names = sorted(n for n, s in DECODINGS.items() if s.with_hotwords)
        raise ConfigError(f"hotwords need a beam search (one of {names}), got decoding {name!r}")
    return biased


def row_decoding(name: str) -> str | None:
    """A result row's ``decoding``: None for greedy (the rows as they always were), else the
    name, which the mode also ends in (:func:`mode_suffix`).

    >>> row_decoding("greedy"), row_decoding("beam_lm"), mode_suffix("beam_lm")
    (None, 'beam_lm', '-beam_lm')
    """
    return None if name == GreedySearch.name else name


def mode_suffix(name: str) -> str:
    """What a row's mode gets for a decoding: ``-<name>``, nothing for greedy."""
    decoding = row_decoding(name)
    return "" if decoding is None else f"-{decoding}"
