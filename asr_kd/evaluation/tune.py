"""Tune the LM weight and word score of ``beam_lm`` on a dev subset: a grid, like icefall's
``--lm-scale`` sweep, printed best first.

The model runs once per utterance (full context, or the chunk mask of ``chunk_size`` encoder
frames, whose log-probs equal the streaming path's); only the search runs per grid point. Each
point builds its search anew (flashlight fixes the weights at construction), which reloads the
LM: a large ARPA LM is quicker as a KenLM binary.

Usage:
    utts = dev_log_probs(load_model(ckpt), "exp/data", "dev", chunk_size=8, left_chunks=4)
    rows = grid_search(utts, tokenizer, BeamSettings(lm="lm/3gram.arpa"), [0.3, 0.5, 1.0],
                       [-1.0, 0.0, 1.0])
    rows[0]   # {"lm_weight": 0.5, "word_score": 0.0, "wer": 12.3, ...}, the best
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch
from tqdm import tqdm

from asr_kd.data.datamodule import AsrDataModule
from asr_kd.inference.search import BeamSettings, make_search
from asr_kd.metrics import error_rates

__all__ = ["DevUtterance", "dev_log_probs", "grid_search"]


@dataclass(frozen=True)
class DevUtterance:
    """One utterance's reference and (T', V) CTC log-probs."""

    cut_id: str
    text: str
    log_probs: torch.Tensor


@torch.inference_mode()
def dev_log_probs(
    loaded,
    data_dir: str,
    subset: str,
    chunk_size: int | None = None,
    left_chunks: int = -1,
    max_duration: float = 200.0,
) -> list[DevUtterance]:
    """The log-probs of every utterance of ``subset`` (full context when ``chunk_size`` is None,
    else with the chunk mask of ``chunk_size`` frames and ``left_chunks`` chunks of context)."""
    batches = AsrDataModule(data_dir, num_workers=0).dataloader(
        subset, shuffle=False, max_duration=max_duration
    )
    utts = []
    for batch in tqdm(batches, desc=f"{subset} log-probs", unit="batch", leave=False):
        masking = () if chunk_size is None else (chunk_size, left_chunks)
        log_probs, lens = loaded.model(batch["feats"], batch["feat_lens"], *masking)[:2]
        for i, cut_id in enumerate(batch["cut_ids"]):
            lp = log_probs[i, : int(lens[i])].float().contiguous()
            utts.append(DevUtterance(cut_id, batch["texts"][i], lp))
    return utts


def grid_search(
    utts: list[DevUtterance],
    tokenizer,
    beam: BeamSettings,
    lm_weights: list[float],
    word_scores: list[float],
) -> list[dict]:
    """WER of ``beam_lm`` at every (lm_weight, word_score), best first (ties: the smaller
    weight); each row: ``lm_weight``, ``word_score``, ``wer``, ``sub``, ``del``, ``ins``."""
    refs = [u.text for u in utts]
    rows = []
    grid = list(itertools.product(lm_weights, word_scores))
    for lm_weight, word_score in tqdm(grid, desc="lm_weight x word_score", leave=False):
        settings = replace(beam, lm_weight=lm_weight, word_score=word_score)
        search = make_search("beam_lm", tokenizer, settings)
        rates = error_rates(refs, [search.offline(u.log_probs) for u in utts])
        rows.append({"lm_weight": lm_weight, "word_score": word_score, **_rates(rates)})
    return sorted(rows, key=lambda r: (r["wer"], r["lm_weight"], abs(r["word_score"])))


def _rates(rates: dict) -> dict:
    return {key: rates[key] for key in ("wer", "sub", "del", "ins")}
