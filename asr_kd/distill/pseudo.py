"""Teacher pseudo-labels: sequence-level KD on untranscribed audio (Doutre et al., Interspeech
2021, arXiv 2010.12096: a full-context teacher transcribes audio for a streaming student).

``asr-kd-dump-targets pseudo_labels=true`` stores, next to each shard's soft targets, the
teacher's greedy CTC transcript of every cut with a confidence (:func:`greedy_labels`):

    <out_dir>/shard_00000.labels.jsonl   one line per cut of the shard:
                                         {"cut_id", "text", "confidence", "num_tokens"}

The file is one of the shard's files (size and SHA-256 in its ``.json`` and in ``index.json``),
so it is checked on open, by ``verify=true`` and by a resumed dump exactly like the arrays, and
it carries the shard's teacher fingerprint.

Confidence (``mean_token_peak_posterior``): the mean, over the tokens the greedy path emits, of
each token's peak posterior (the largest probability, at temperature 1, over the frames of its
run of argmax frames); in [0, 1]; 0.0 for an empty transcript (nothing to train CTC on: such a
cut is never kept). Blank frames are left out on purpose: a peaky CTC teacher gives blank
p ~ 1 on most frames, so a frame average (``exp`` of the greedy path's mean log-prob) sits
near 1 for almost every cut and separates nothing.

For training (:func:`load_pseudo_labels`, ``asr-kd-distill distill.pseudo_labels=...``), a cut
*without* a transcript whose label has ``confidence >= min_confidence`` trains CTC on the label
(tokenized by the student's tokenizer); a real transcript always wins over a label; a cut below
the threshold stays KD-only, or is dropped from training when there is no KD term.

Usage:
    labels = greedy_labels(log_probs, out_lens)     # [(token ids, confidence)] per cut
    pseudo = load_pseudo_labels("exp/targets", "DATA", ["train", "extra"], 0.5, tokenizer)
    pseudo.texts["1048-10480-0000"], pseudo.summary["kept"]
    summary = build_pseudo_labels(cfg, kd, dm, kd_term=True)   # asr-kd-distill: dm trains on them
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr_kd.data.datamodule import cut_text, load_cuts
from asr_kd.data.tokenizer import normalize_text
from asr_kd.distill.store import LABELS_SUFFIX, SoftTargetStore, data_identity, redump_hint
from asr_kd.errors import ConfigError, MissingFileError
from asr_kd.models.decode import collapse_ids
from asr_kd.models.loading import source_sha256
from asr_kd.schemas import KDConfig

__all__ = [
    "CONFIDENCE",
    "LABELS_SUFFIX",
    "PseudoLabels",
    "build_pseudo_labels",
    "greedy_labels",
    "labels_summary",
    "load_pseudo_labels",
    "token_peak_confidence",
]

CONFIDENCE = "mean_token_peak_posterior"  # the definition above; stored in every shard's .json
# Thresholds the dump's summary counts kept cuts at, to choose distill.pseudo_min_confidence.
SUMMARY_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95)

log = logging.getLogger(__name__)


def token_peak_confidence(frame_ids: np.ndarray, frame_probs: np.ndarray, blank_id: int = 0):
    """Mean over the greedy path's emitted tokens of each token's peak posterior (0.0 if none).

    Args:
        frame_ids: (T,) argmax id per frame; frame_probs: (T,) its probability.

    >>> ids = np.array([0, 3, 3, 0, 0, 5, 0])           # emits 3, 5
    >>> probs = np.array([.9, .6, .8, .99, .9, .7, .9])  # token 3 peaks at .8, token 5 at .7
    >>> round(token_peak_confidence(ids, probs), 3), token_peak_confidence(np.zeros(3), np.ones(3))
    (0.75, 0.0)
    """
    if len(frame_ids) == 0:
        return 0.0
    starts = np.flatnonzero(np.concatenate(([True], frame_ids[1:] != frame_ids[:-1])))
    peaks = np.maximum.reduceat(frame_probs, starts)  # one per run of equal ids
    emitted = frame_ids[starts] != blank_id
    return float(peaks[emitted].mean()) if emitted.any() else 0.0


def greedy_labels(
    log_probs: torch.Tensor, out_lens: torch.Tensor, blank_id: int = 0
) -> list[tuple[list[int], float]]:
    """Per cut, the greedy CTC token ids (as :func:`asr_kd.models.decode.greedy_ctc`) and their
    :func:`token_peak_confidence`.

    Args:
        log_probs: (B, T', V) log-posteriors at temperature 1; out_lens: (B,) valid frames.
    """
    top_log_probs, top_ids = log_probs.float().max(dim=-1)  # (B, T') each
    top_probs, top_ids = top_log_probs.exp().cpu().numpy(), top_ids.cpu().numpy()
    out = []
    for ids, probs, n in zip(top_ids, top_probs, out_lens.tolist(), strict=True):
        out.append(
            (
                collapse_ids(ids[:n], blank_id=blank_id),
                token_peak_confidence(ids[:n], probs[:n], blank_id),
            )
        )
    return out


@dataclass
class PseudoLabels:
    """What a distillation run trains on: ``texts`` (cut id -> pseudo transcript, only the cuts
    without a transcript that passed the threshold) and ``summary`` (the counts it reports)."""

    texts: dict[str, str]
    summary: dict


def _check_store(store: SoftTargetStore, data_dir: Path, subsets: Sequence[str]) -> None:
    """Labels of a subset must come from the cuts being trained on (same ``cuts_sha256``)."""
    stored = store.info.get("subsets") or {}
    for subset in subsets:
        if subset not in stored:
            continue
        found, _ = data_identity(data_dir, subset)
        if stored[subset]["cuts_sha256"] != found["cuts_sha256"]:
            raise ConfigError(
                f"pseudo-labels of subset {subset!r} in {store.dir} were dumped from other cuts "
                f"(cuts_sha256 {stored[subset]['cuts_sha256']}, {stored[subset]['data_dir']}) "
                f"than {data_dir}/cuts_{subset}.jsonl.gz ({found['cuts_sha256']}); expected "
                "the same prepared cuts: dump the pseudo-labels again from this data dir"
            )


def _encodable(tokenizer, cut_id: str, text: str, where: Path) -> str:
    try:
        tokenizer.encode(text)
    except ValueError as error:
        raise ConfigError(
            f"pseudo-label of cut {cut_id!r} in {where} does not fit the student's tokenizer "
            f"({error}); expected a teacher with the student's alphabet"
        ) from None
    return text


def load_pseudo_labels(
    store_dir: str | Path,
    data_dir: str | Path,
    subsets: Sequence[str],
    min_confidence: float,
    tokenizer,
    checkpoint_sha256: str | None = None,
) -> PseudoLabels:
    """The labels of ``subsets``' untranscribed cuts with ``confidence >= min_confidence``.

    Every untranscribed cut must have a label (else ``MissingFileError`` with the dump that
    writes them); ``checkpoint_sha256`` (the run's teacher, when it has one) must be the store's
    teacher; ``tokenizer`` (the student's) must encode every kept text.
    """
    store = SoftTargetStore(store_dir)
    if checkpoint_sha256 is not None:
        store.check_fingerprint({**store.fingerprint, "checkpoint_sha256": checkpoint_sha256})
    labels = store.pseudo_labels()
    _check_store(store, Path(data_dir), subsets)
    texts: dict[str, str] = {}
    missing, confidences, untranscribed, transcribed_with_label = [], [], 0, 0
    for subset in subsets:
        for cut in load_cuts(data_dir, subset):
            label = labels.get(cut.id)
            if cut_text(cut):
                transcribed_with_label += label is not None  # the real transcript wins
                continue
            untranscribed += 1
            if label is None:
                missing.append(cut.id)
                continue
            confidences.append(label["confidence"])
            text = normalize_text(label["text"])
            if text and label["confidence"] >= min_confidence:
                texts[cut.id] = _encodable(tokenizer, cut.id, text, store.dir)
    if missing:
        raise MissingFileError(
            f"{len(missing)} of {untranscribed} untranscribed cuts of {list(subsets)} "
            f"have no pseudo-label in {store.dir} (e.g. {missing[0]!r}); "
            + redump_hint(store.dir, subsets, fixes="it labels them", pseudo_labels=True)
        )
    summary = {
        "store": str(store.dir),
        "min_confidence": float(min_confidence),
        "untranscribed_cuts": untranscribed,
        "pseudo_labelled": len(confidences),
        "kept": len(texts),
        "below_threshold": len(confidences) - len(texts),
        "mean_confidence": float(np.mean(confidences)) if confidences else None,
        "transcribed_cuts_with_label": transcribed_with_label,  # ignored: real text wins
    }
    return PseudoLabels(texts, summary)


def labels_summary(records: Sequence[dict]) -> dict:
    """The dump's report of its labels: counts, mean confidence, cuts kept per threshold."""
    confidences = np.array([r["confidence"] for r in records], dtype=np.float64)
    nonempty = np.array([bool(r["text"]) for r in records], dtype=bool)
    return {
        "confidence": CONFIDENCE,
        "cuts": len(records),
        "empty": int((~nonempty).sum()),
        "mean_confidence": float(confidences.mean()) if len(records) else None,
        "kept_at": {str(t): int(((confidences >= t) & nonempty).sum()) for t in SUMMARY_THRESHOLDS},
    }


def build_pseudo_labels(cfg, kd: KDConfig, dm, kd_term: bool) -> dict | None:
    """Hand the data module ``dm`` the pseudo-labels of ``kd.pseudo_labels`` (a store dir, or
    true: ``cfg.targets_dir``) kept at ``kd.pseudo_min_confidence``; return the
    summary (None when the option is off). Without a KD term (``kd_term`` False) the
    untranscribed cuts below the threshold are dropped from training, else they stay KD-only."""
    source = kd.pseudo_labels
    if source is None or source is False:
        return None
    store_dir = cfg.get("targets_dir") if source is True else source
    if store_dir is None:
        raise ConfigError(
            "distill.pseudo_labels=true reads the pseudo-labels from targets_dir, which is not "
            "set; expected targets_dir=<out_dir of asr-kd-dump-targets pseudo_labels=true> or "
            "distill.pseudo_labels=<that dir>"
        )
    threshold = float(kd.pseudo_min_confidence)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"distill.pseudo_min_confidence={threshold}, expected 0 <= it <= 1")
    # the run's teacher as the store fingerprints it (None without one, or for a hub id: the
    # soft targets' own check covers it when the run distils)
    teacher = cfg.get("teacher_ckpt")
    teacher_sha = source_sha256(teacher) if teacher else None
    pseudo = load_pseudo_labels(
        store_dir, dm.data_dir, dm.train_subsets, threshold, dm.tokenizer, teacher_sha
    )
    if not pseudo.summary["untranscribed_cuts"]:
        log.warning(
            "distill.pseudo_labels=%s changes nothing: the training subsets %s have no cut "
            "without a transcript (expected an untranscribed subset, e.g. data.train_subset="
            "[train,extra])",
            source, dm.train_subsets,
        )  # fmt: skip
    dm.use_pseudo_labels(pseudo.texts, drop_untranscribed=not kd_term)
    summary = {**pseudo.summary, "below_threshold_cuts": "kd_only" if kd_term else "dropped"}
    log.info(
        "pseudo-labels from %s: %d of %d untranscribed training cuts labelled, %d kept at "
        "confidence >= %g (CTC on them); %d below: %s",
        store_dir, summary["pseudo_labelled"], summary["untranscribed_cuts"], summary["kept"],
        threshold, summary["below_threshold"], summary["below_threshold_cuts"],
    )  # fmt: skip
    return summary
