"""CTC searches: log-probs -> text, offline or over chunks; one registry entry per method.

=========  ==================================================================================
decoding   what it is
=========  ==================================================================================
greedy     best path: argmax per frame, repeats merged, blanks dropped
beam       CTC prefix beam search, lexicon-free, no LM (flashlight's ``LexiconFreeDecoder``)
beam_lm    beam search constrained to a lexicon, scored by a word n-gram LM (ARPA, KenLM
           inside flashlight-text): ``lm_weight`` x LM log-prob + ``word_score`` per word;
           without ``lm`` the lexicon alone
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

from asr_kd.errors import ConfigError
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

    size: int = 50
    threshold: float = 25.0  # hypotheses this far (log) below the best are dropped
    lm: str | None = None  # ARPA (.arpa, .arpa.gz) or KenLM binary; beam_lm only
    lexicon: str | None = None  # None: the LM's unigram words (beam_lm needs one of the two)
    lm_weight: float = 0.5
    word_score: float = 0.0
    cache_dir: str = "~/.cache/asr_kd/lm"  # decompressed .arpa.gz and spelled lexicons
    prune_frames: int | None = None  # streaming: commit and forget history this far back


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


class GreedyTokenStream(SearchStream):
    """Greedy CTC over the frames of one utterance arriving in pieces: a token repeated across a
    piece boundary is merged, as offline; the text is detokenised only when tokens were added.

    >>> class Chars:
    ...     blank_id = 0
    ...     def decode(self, ids): return "".join("_ab"[i] for i in ids)
    >>> stream = GreedyTokenStream(Chars())
    >>> stream.extend_ids(np.array([1, 1])); stream.extend_ids(np.array([1, 0, 2])); stream.text
    'ab'
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self._last = -1
        self._text, self._decoded = "", 0

    def extend(self, log_probs: Any) -> None:
        ids = log_probs.argmax(-1)
        self.extend_ids(ids.cpu().numpy() if isinstance(ids, torch.Tensor) else ids)

    def extend_ids(self, frame_ids: np.ndarray) -> None:
        """(n,) per-frame argmax ids of the next n frames (n may be 0)."""
        if frame_ids.size:
            self.token_ids += collapse_ids(frame_ids, self._last, self.tokenizer.blank_id)
            self._last = int(frame_ids[-1])

    @property
    def text(self) -> str:
        if self._decoded != len(self.token_ids):
            self._text = self.tokenizer.decode(self.token_ids)
            self._decoded = len(self.token_ids)
        return self._text


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

    With ``BeamSettings.prune_frames`` = P, every P decoded frames the best path is committed up
    to P frames back (flashlight moves further back, to a word boundary) and flashlight's
    history before it is dropped (``prune``), so memory and the cost of a partial transcript stay
    bounded on an endless stream; the transcript can then differ from the offline search's where
    the best path of P frames ago is not the final one's. Without it (the default) the search
    keeps every frame's beam and equals the offline search exactly.
    """

    def __init__(self, search: BeamSearch) -> None:
        self.search = search
        self.decoder = search.decoder
        self.decoder.decode_begin()
        self._final: str | None = None
        self._committed: list[int] = []  # per-frame tokens before flashlight's buffer
        self._unpruned = 0  # frames decoded since the last prune

    def extend(self, log_probs: Any) -> None:
        log_probs = torch.as_tensor(log_probs, dtype=torch.float32).contiguous()
        if log_probs.shape[0]:
            self.decoder.decode_step(log_probs)
            self._unpruned += log_probs.shape[0]
        look_back = self.search.beam.prune_frames
        if look_back is not None and self._unpruned >= 2 * look_back:
            self._commit(look_back)

    def _commit(self, look_back: int) -> None:
        # flashlight's decoder (torchaudio wraps neither call) gives the path to the frame it
        # prunes at, which stays as the first frame of its buffer: kept once, here
        path = list(self.decoder.decoder.get_best_hypothesis(look_back).tokens)
        self._committed += path[1:] if self._committed else path
        self.decoder.decoder.prune(look_back)
        self._unpruned = look_back

    def _frames(self, path) -> list[int]:
        """The whole utterance's per-frame path: committed frames, then flashlight's buffer."""
        path = list(path)
        return self._committed + path[1:] if self._committed else path

    @property
    def text(self) -> str:
        if self._final is not None:
            return self._final
        return self.search.text_of(self._frames(self.decoder.decoder.get_best_hypothesis().tokens))

    def finalize(self) -> str:
        if self._final is None:
            self.decoder.decode_end()
            best = self.decoder.decoder.get_all_final_hypothesis()
            self._final = self.search.text_of(self._frames(best[0].tokens)) if best else ""
        return self._final


class BeamSearch(CtcSearch):
    """flashlight's CTC beam search: lexicon-free without LM (``beam``), or lexicon + word LM
    (``beam_lm``)."""

    name = "beam"
    uses_lexicon: ClassVar[bool] = False

    def __init__(self, tokenizer: Any, beam: BeamSettings | None = None) -> None:
        super().__init__(tokenizer, beam)
        ctc_decoder = _flashlight_decoder(self.name)
        beam, symbols = self.beam, list(tokenizer.symbols)
        lexicon = lm = None
        if self.uses_lexicon:
            lm = None if beam.lm is None else str(arpa_file(beam.lm, beam.cache_dir))
            lexicon = str(self._lexicon_file(lm))
        self.decoder = ctc_decoder(
            lexicon=lexicon,
            tokens=symbols,
            lm=lm,
            beam_size=beam.size,
            beam_threshold=beam.threshold,
            lm_weight=beam.lm_weight,
            word_score=beam.word_score,
            blank_token=symbols[tokenizer.blank_id],
            sil_token=word_end(tokenizer),
        )

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
        lines = spell_lexicon(words, self.tokenizer)
        if not lines:
            raise ConfigError(
                f"no word of {beam.lexicon or beam.lm} is spelled by {self.tokenizer}"
            )
        text = "".join(lines)
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        path = Path(beam.cache_dir).expanduser() / f"lexicon-{key}.txt"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        return path

    def stream(self) -> BeamStream:
        return BeamStream(self)

    def text_of(self, frame_tokens) -> str:
        """Text of flashlight's per-frame token path (repeats merged, blanks dropped)."""
        ids = np.asarray(frame_tokens, dtype=np.int64)
        return self.text_of_ids(collapse_ids(ids, blank_id=self.tokenizer.blank_id))

    def text_of_ids(self, ids: list[int]) -> str:
        """Text of token ids; the word boundaries flashlight puts first and last (a BPE
        vocabulary's bare ``▁`` decodes to a space) are stripped."""
        return " ".join(self.tokenizer.decode(ids).split())


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
    uses_lexicon = True


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
    search.name: search for search in (GreedySearch, BeamSearch, LexiconBeamSearch)
}


def make_search(name: str, tokenizer: Any, beam: BeamSettings | None = None) -> CtcSearch:
    """``DECODINGS[name](tokenizer, beam)``; ``ConfigError`` for an unknown name."""
    if name not in DECODINGS:
        raise ConfigError(f"decoding must be one of {sorted(DECODINGS)}, got {name!r}")
    return DECODINGS[name](tokenizer, beam)


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
