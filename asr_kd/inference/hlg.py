"""HLG decoding graphs for sherpa-onnx's CTC FST decoder (``OnlineCtcFstDecoderConfig``), built
with ``kaldilm`` (ARPA -> G) and ``kaldifst`` (compose, determinize, minimize): icefall's
``local/prepare_lang_fst.py`` route, without k2.

- H: the CTC topology over our tokens: one state per token, blank (id 0) the start state, an arc
  into state ``k`` reads token ``k``; it writes ``k`` unless it repeats the state's own token
  (the blank writes nothing).
- L: every word of the LM (or of a lexicon) spelled by our tokenizer; for characters a word
  must be followed by ``▁`` (the space the model emits) before the next one. Spellings that are
  a prefix of another, or repeat one, end in a disambiguation token ``#1``, ``#2``, ... (Kaldi's
  ``add_lex_disambig.pl`` rule), so that L o G determinizes.
- G: the ARPA n-gram (``kaldilm.arpa2fst``, back-off arcs reading ``#0``), its costs scaled to
  ``beam_lm``'s units: flashlight adds ``lm_weight x log10 p + word_score`` per word, G holds
  ``-ln p``, so each cost is multiplied by ``lm_weight / ln 10`` and each word arc gets
  ``-word_score``; the values ``asr-kd-lm tune`` finds for ``beam_lm`` serve the graph as they
  are.

Labels as sherpa-onnx reads them (``online-ctc-fst-decoder.cc``): input label ``token id + 1``
(0 is epsilon; kaldi-decoder's ``DecodableCtc`` scores label ``i`` with log-prob column
``i - 1``), output labels the word ids of G's symbol table; the disambiguation tokens become
epsilon after the last determinization. sherpa-onnx writes its text from the path's tokens (its
``tokens.txt``), so the word ids need no table beside the graph.

Usage:
    grammar = arpa_grammar("exp/lm/3gram.arpa", lm_weight=0.5, word_score=1.0)
    hlg = build_hlg(tokenizer, grammar)          # a kaldifst.StdVectorFst
    hlg.write("exp/lm/HLG.fst")                  # OnlineCtcFstDecoderConfig(graph=...)
    write_hlg(tokenizer, "exp/lm/3gram.arpa", "exp/lm/HLG.fst", lm_weight=0.5)  # the same
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from asr_kd.errors import ConfigError
from asr_kd.inference.lm import arpa_file, lexicon_words
from asr_kd.inference.search import SPACE, UNKNOWN

__all__ = [
    "Grammar",
    "arpa_grammar",
    "build_hlg",
    "ctc_topology",
    "lexicon_fst",
    "spellings",
    "write_hlg",
]

WORD_DISAMBIG = "#0"  # G's back-off symbol (kaldilm's disambig_symbol)
_SPECIAL_WORDS = {"<eps>", WORD_DISAMBIG, "<s>", "</s>", "<unk>", "<UNK>"}


def _kaldifst():
    try:
        import kaldifst

        return kaldifst
    except ImportError as err:
        raise ConfigError(
            f"HLG graphs need kaldifst and kaldilm: pip install 'asr_kd[hlg]' ({err})"
        ) from err


@dataclass
class Grammar:
    """G: an FST over words (``fst``, a ``kaldifst.StdVectorFst``; input label = output label
    = word id, back-off arcs read ``words["#0"]``) and its symbol table ``words`` (word -> id)."""

    fst: object
    words: dict[str, int]


def arpa_grammar(
    arpa: str | Path,
    lm_weight: float = 1.0,
    word_score: float = 0.0,
    cache_dir: str | Path = "~/.cache/asr_kd/lm",
) -> Grammar:
    """G of an ARPA file (``.arpa.gz`` decompressed into ``cache_dir`` once), costs scaled to
    ``beam_lm``'s ``lm_weight`` and ``word_score`` (module docstring)."""
    kaldifst = _kaldifst()
    import kaldilm

    path = arpa_file(arpa, cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "words.txt"
        text = kaldilm.arpa2fst(
            input_arpa=str(path), disambig_symbol=WORD_DISAMBIG, write_symbol_table=str(table)
        )
        words = {w: int(i) for w, i in (line.split() for line in table.read_text().splitlines())}
    scale = lm_weight / math.log(10.0)
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:  # src dst ilabel olabel [cost]
            cost = float(fields[4]) * scale if len(fields) > 4 else 0.0
            if fields[3] != "0":
                cost -= word_score
            lines.append(f"{' '.join(fields[:4])} {cost:.6g}")
        elif fields:  # final state [cost]
            cost = float(fields[1]) * scale if len(fields) > 1 else 0.0
            lines.append(f"{fields[0]} {cost:.6g}")
    return Grammar(kaldifst.compile(s="\n".join(lines) + "\n", acceptor=False), words)


def spellings(words, tokenizer) -> dict[str, tuple[int, ...]]:
    """Word -> its token ids, for the words ``tokenizer`` can spell (characters outside it, or
    BPE's ``<unk>`` piece, leave a word out); G's special symbols are not words.

    >>> from asr_kd.data.tokenizer import Tokenizer
    >>> spellings(["HI", "4U", "#0"], Tokenizer.char())
    {'HI': (10, 11)}
    """
    unknown = tokenizer.symbols.index(UNKNOWN) if UNKNOWN in tokenizer.symbols else None
    spelled = {}
    for word in words:
        if word in _SPECIAL_WORDS or tokenizer.cannot_spell(word):
            continue
        ids = tuple(tokenizer.encode(word))
        if ids and unknown not in ids:
            spelled[word] = ids
    return spelled


def _fst_text(arcs: list[tuple], finals: list[int]) -> str:
    """OpenFst's text form: ``src dst ilabel olabel`` per arc (the first arc's ``src`` is the
    start state), then one line per final state."""
    lines = [" ".join(str(x) for x in arc) for arc in arcs]
    return "\n".join(lines + [str(s) for s in finals]) + "\n"


def _compile(text: str):
    """An FST of :func:`_fst_text`'s text, its states numbered as written."""
    return _kaldifst().compile(s=text, acceptor=False, keep_state_numbering=True)


def ctc_topology(vocab_size: int, disambig: list[int], blank_id: int = 0):
    """H (module docstring): labels ``token + 1``; each label of ``disambig`` (token-side
    disambiguation symbols) passes through every state as a self-loop."""
    if blank_id != 0:
        raise ConfigError(f"the CTC topology takes the blank at id 0, got blank id {blank_id}")
    arcs = [
        (i, k, k + 1, 0 if k in (i, blank_id) else k + 1)
        for i in range(vocab_size)
        for k in range(vocab_size)
    ]
    arcs += [(i, i, d, d) for i in range(vocab_size) for d in disambig]
    return _compile(_fst_text(arcs, list(range(vocab_size))))


def lexicon_fst(
    spelled: dict[str, tuple[int, ...]], word_ids: dict[str, int], first_disambig: int, space=None
) -> tuple[object, int]:
    """L (module docstring) and the number of disambiguation tokens it uses (``#1``...: labels
    ``first_disambig + k``). ``space``: the token id that must follow each word (characters),
    None where words carry their own boundary (BPE)."""
    prefixes = {ids[:i] for ids in spelled.values() for i in range(1, len(ids))}
    repeats = Counter(spelled.values())
    used: Counter = Counter()
    loop, end = 0, (1 if space is not None else 0)
    arcs, next_state = [], end + 1
    for word, ids in spelled.items():
        labels = [i + 1 for i in ids]
        if ids in prefixes or repeats[ids] > 1:
            used[ids] += 1
            labels.append(first_disambig + used[ids])
        state = loop
        for n, label in enumerate(labels):
            target = end if n == len(labels) - 1 else next_state
            arcs.append((state, target, label, word_ids[word] if n == 0 else 0))
            if target != end:
                state, next_state = target, next_state + 1
    if space is not None:  # a space ends a word; spaces before the first word are absorbed
        arcs += [(end, loop, space + 1, 0), (loop, loop, space + 1, 0)]
    fst = _compile(_fst_text(arcs, sorted({loop, end})))
    return fst, max(used.values(), default=0)


def build_hlg(tokenizer, grammar: Grammar, words=None):
    """The HLG of ``tokenizer`` and ``grammar`` (its words, or those of ``words`` that G has),
    determinized, disambiguation tokens removed (module docstring)."""
    kaldifst = _kaldifst()
    spelled = spellings(grammar.words if words is None else words, tokenizer)
    spelled = {w: ids for w, ids in spelled.items() if w in grammar.words}
    if not spelled:
        raise ConfigError(f"no word of the language model is spelled by {tokenizer}")
    vocab = len(tokenizer.symbols)
    token_disambig0 = vocab + 1  # "#0" on the token side; "#1"... follow it
    space = tokenizer.symbols.index(SPACE) if tokenizer.kind == "char" else None
    L, num_disambig = lexicon_fst(spelled, grammar.words, token_disambig0, space)
    kaldifst.add_self_loops(L, isyms=[token_disambig0], osyms=[grammar.words[WORD_DISAMBIG]])
    G = grammar.fst
    kaldifst.arcsort(L, sort_type="olabel")
    kaldifst.arcsort(G, sort_type="ilabel")
    LG = kaldifst.compose(L, G)
    kaldifst.determinize_star(LG)
    kaldifst.minimize_encoded(LG)
    kaldifst.arcsort(LG, sort_type="ilabel")
    disambig = list(range(token_disambig0, token_disambig0 + num_disambig + 1))
    H = ctc_topology(vocab, disambig, tokenizer.blank_id)
    kaldifst.arcsort(H, sort_type="olabel")
    HLG = kaldifst.compose(H, LG)
    kaldifst.determinize_star(HLG)
    return _without_disambig(HLG, token_disambig0)


# OpenFst property bits (fst/properties.h) that relabelling input labels can change: acceptor,
# input determinism, epsilons, input epsilons, input-label order (each a bit and its negation).
_ILABEL_PROPERTIES = (
    0x10000
    | 0x20000
    | 0x40000
    | 0x80000
    | 0x400000
    | 0x800000
    | 0x1000000
    | 0x2000000
    | 0x10000000
    | 0x20000000
)


def _without_disambig(fst, first: int):
    """``fst`` with input labels ``>= first`` made epsilon, in place. kaldifst's arc iterator
    writes the arcs without updating the stored properties (a graph would still say "no input
    epsilons"), so the properties those labels decide are reset to unknown afterwards."""
    kaldifst = _kaldifst()
    for state in kaldifst.StateIterator(fst):
        for arc in kaldifst.ArcIterator(fst, state):
            if arc.ilabel >= first:
                arc.ilabel = 0
    fst.set_properties(0, _ILABEL_PROPERTIES)
    return fst


def write_hlg(
    tokenizer,
    lm: str | Path,
    out: str | Path,
    lm_weight: float = 1.0,
    word_score: float = 0.0,
    lexicon: str | Path | None = None,
    cache_dir: str | Path = "~/.cache/asr_kd/lm",
):
    """Build the HLG of ARPA ``lm`` (words: its own, or those of ``lexicon`` it has) and write
    it to ``out`` atomically; returns the graph."""
    grammar = arpa_grammar(lm, lm_weight, word_score, cache_dir)
    hlg = build_hlg(tokenizer, grammar, None if lexicon is None else lexicon_words(lexicon))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    hlg.write(str(tmp))
    tmp.replace(out)  # a half-written graph is never read as a whole one
    return hlg
