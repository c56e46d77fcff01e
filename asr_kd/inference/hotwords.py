"""Hotwords: words (or phrases) whose recognition a beam search favours, each with a boost.

A hotword file has one hotword per line, ``WORD`` or ``WORD<TAB>boost`` (a phrase: words
separated by spaces); the boost is the log-score bonus per word (default: the search's
``hotword_boost``). The search spells each hotword in its units (tokens for ``beam_hotwords``,
lexicon words for ``beam_lm_hotwords``) and walks a :class:`ContextGraph` (icefall's idea: a
prefix tree of the spellings with Aho-Corasick failure links): each unit that extends a match
earns ``boost x words / units``; a match that fails, or is cut by the end of the utterance,
gives back what it earned; a completed hotword keeps it. The graph scores through flashlight's
LM hook (:class:`HotwordLM`, a ``CTCDecoderLM`` that adds the bonus to the LM it wraps), which
flashlight calls per token without a lexicon and per word with one. With a lexicon, flashlight
also spreads each word's unigram score over its spelling (smearing), so a hotword's prefix gets
its bonus before the word ends.

:func:`pick_hotwords` chooses a measurable set: test words the training transcripts hold at most
once (``asr-kd-lm hotwords`` writes them to a file).

Usage:
    write_hotwords("hotwords.txt", [w for w, _, _ in pick_hotwords(test_texts, train_texts)])
    hotwords = read_hotwords("hotwords.txt", default_boost=3.0)   # [("ANNA KARENINA", 3.0), ...]
    graph = ContextGraph([((5, 9, 9, 5), 1.5)])                  # unit ids, bonus per unit
    node, bonus = graph.step(graph.root, 5)
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from asr_kd.data.tokenizer import normalize_text
from asr_kd.errors import BadFileError, MissingFileError

__all__ = ["ContextGraph", "HotwordLM", "pick_hotwords", "read_hotwords", "write_hotwords"]


def read_hotwords(path: str | Path, default_boost: float) -> list[tuple[str, float]]:
    """``(hotword, boost per word)`` for each line of ``path`` (normalised as transcripts are);
    blank lines skipped, a repeated hotword keeps its last boost."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"hotword file not found: {path}")
    found: dict[str, float] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        text, _, boost = line.partition("\t")
        try:
            value = float(boost) if boost.strip() else default_boost
        except ValueError:
            raise BadFileError(
                f"{path}:{number}: boost {boost!r} is not a number (expected WORD or "
                "WORD<TAB>boost)"
            ) from None
        words = normalize_text(text)
        if words:
            found[words] = value
    if not found:
        raise BadFileError(f"{path} holds no hotword (expected WORD or WORD<TAB>boost lines)")
    return list(found.items())


def pick_hotwords(
    texts: Iterable[str],
    train_texts: Iterable[str],
    max_train_count: int = 1,
    min_chars: int = 4,
    limit: int | None = None,
) -> list[tuple[str, int, int]]:
    """The realistic hotwords of an evaluation set: the words of ``texts`` (its transcripts)
    with at least ``min_chars`` characters that the training transcripts hold at most
    ``max_train_count`` times (names, rare words: what a user would list), as ``(word, count
    in texts, count in training)``, most frequent in ``texts`` first, at most ``limit``.

    >>> pick_hotwords(["ANNA SAW THE DOG", "ANNA AND BORIS"], ["THE DOG SAW BORIS"] * 2)
    [('ANNA', 2, 0)]
    """
    train = Counter(word for text in train_texts for word in text.split())
    found = Counter(word for text in texts for word in text.split())
    picked = [
        (word, n, train[word])
        for word, n in found.items()
        if len(word) >= min_chars and train[word] <= max_train_count
    ]
    picked.sort(key=lambda item: (-item[1], item[0]))
    return picked if limit is None else picked[:limit]


def write_hotwords(path: str | Path, words: Iterable[str]) -> None:
    """A hotword file of ``words``, one per line, no boost (the search's default applies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{word}\n" for word in words), encoding="utf-8")


class ContextGraph:
    """A prefix tree of unit sequences with failure links; a node is an int (0 = the root).

    ``step(node, unit) -> (node, bonus)``; ``finish(node)`` gives back an unfinished match.

    >>> graph = ContextGraph([((1, 2, 3), 1.0)])
    >>> node, total = graph.root, 0.0
    >>> for unit in (1, 2, 4):  # 1 2 matched, 4 breaks the match: all given back
    ...     node, bonus = graph.step(node, unit); total += bonus
    >>> total
    0.0
    >>> for unit in (1, 2, 3, 4):  # completed: kept
    ...     node, bonus = graph.step(node, unit); total += bonus
    >>> total
    3.0
    """

    root = 0

    def __init__(self, sequences: list[tuple[tuple[int, ...], float]]) -> None:
        self._children: list[dict[int, int]] = [{}]
        self._score = [0.0]  # bonus earned along the tree path
        self._end = [False]
        for units, per_unit in sequences:
            node = self.root
            for unit in units:
                child = self._children[node].get(unit)
                if child is None:
                    child = len(self._children)
                    self._children[node][unit] = child
                    self._children.append({})
                    self._score.append(0.0)
                    self._end.append(False)
                self._score[child] = max(self._score[child], self._score[node] + per_unit)
                node = child
            self._end[node] = node != self.root
        self._fail, self._pending = self._links()

    def _links(self) -> tuple[list[int], list[float]]:
        """Failure links (the longest proper suffix in the tree) and each node's unkept bonus
        (earned since the last completed hotword on its path), breadth first."""
        fail, pending = [0] * len(self._children), [0.0] * len(self._children)
        queue = deque(self._children[self.root].values())
        for child in queue:
            pending[child] = 0.0 if self._end[child] else self._score[child]
        while queue:
            node = queue.popleft()
            kept = self._score[node] if self._end[node] else self._score[node] - pending[node]
            for unit, child in self._children[node].items():
                found = self._follow(fail, fail[node], unit)
                fail[child] = found if found != child else self.root
                pending[child] = 0.0 if self._end[child] else self._score[child] - kept
                queue.append(child)
        return fail, pending

    def _follow(self, fail: list[int], target: int, unit: int) -> int:
        """The node ``unit`` leads to from ``target`` or the first of its failure links that
        has it as a child; the root when none has."""
        while target and unit not in self._children[target]:
            target = fail[target]
        return self._children[target].get(unit, self.root)

    def step(self, node: int, unit: int) -> tuple[int, float]:
        """The node after ``unit`` and the bonus it earns (negative: a match given back)."""
        child = self._children[node].get(unit)
        if child is not None:
            return child, self._score[child] - self._score[node]
        found = self._follow(self._fail, self._fail[node], unit)
        earned = self._score[found] if self._end[found] else self._pending[found]
        return found, earned - self._pending[node]

    def finish(self, node: int) -> float:
        """End of the utterance: the unfinished match's bonus, given back (<= 0)."""
        return -self._pending[node]


def _lm_base():
    from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

    return CTCDecoderLM, CTCDecoderLMState


def HotwordLM(inner: Any, graph: ContextGraph, lm_weight: float):  # noqa: N802 (a class factory)
    """A flashlight LM (``CTCDecoderLM``): ``lm_weight`` x ``inner``'s score (a flashlight LM:
    KenLM; None: no LM) plus the :class:`ContextGraph` bonus of the same unit. The decoder's
    own ``lm_weight`` must be 1 (it would scale the bonus too). Built on call: torchaudio's
    decoder module needs flashlight-text, an optional dependency.

    flashlight calls ``score`` for every (hypothesis, token) of every frame without a lexicon
    (per word with one), so a call is one dictionary lookup when it was made before, and a new
    state costs one graph step; its states stay distinct per prefix, as ZeroLM's and KenLM's
    do, so that flashlight never merges hypotheses with different histories."""
    base, state_type = _lm_base()
    no_lm = (None, 0.0)

    class _HotwordLM(base):
        def __init__(self) -> None:
            base.__init__(self)
            self._states: dict[Any, tuple[Any, int]] = {}  # ours -> (inner's, graph node)
            self._scored: dict[tuple[Any, int], tuple[Any, float]] = {}

        def start(self, start_with_nothing: bool):
            self._states.clear()  # a new utterance: the states of the last one are unreachable
            self._scored.clear()
            state = state_type()
            first = None if inner is None else inner.start(start_with_nothing)
            self._states[state] = (first, graph.root)
            return state

        def score(self, state, usr_token_idx: int):
            found = self._scored.get((state, usr_token_idx))
            if found is None:
                inner_state, node = self._states[state]
                inner_out, lm_score = (
                    no_lm if inner is None else inner.score(inner_state, usr_token_idx)
                )
                node, bonus = graph.step(node, usr_token_idx)
                out = state.child(usr_token_idx)
                self._states[out] = (inner_out, node)
                found = self._scored[state, usr_token_idx] = (out, lm_weight * lm_score + bonus)
            return found

        def finish(self, state):
            inner_state, node = self._states[state]
            lm_score = 0.0 if inner is None else inner.finish(inner_state)[1]
            return state.child(-1), lm_weight * lm_score + graph.finish(node)

    return _HotwordLM()
