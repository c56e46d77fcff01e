"""A model rebuilt from an asr_kd checkpoint, and where it runs.

``hf:<dir or hub id>[@revision]`` loads a transformers CTC model instead
(:func:`asr_kd.models.hf.load_hf`: an :class:`~asr_kd.models.hf.HFLoaded`, whose model reads
16 kHz audio, not fbank).

Usage:
    loaded = load_model("exp/teacher/checkpoints/last.ckpt")
    log_probs, out_lens = loaded.model(feats, feat_lens)
    print(loaded.tokenizer.decode(ids))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
import torch
from torch import nn

from asr_kd.checkpoint import load_checkpoint
from asr_kd.data.teacher_vocab import is_hf_source
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.models.hf import HFLoaded, load_hf

__all__ = ["LoadedModel", "load_model", "resolve_device"]

_MODEL_PREFIX = "model."


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with what is needed to decode."""

    model: nn.Module
    tokenizer: Any  # asr_kd.data.tokenizer.Tokenizer
    model_config: dict
    role: str
    path: Path


def load_model(path: str | os.PathLike) -> LoadedModel | HFLoaded:
    """Rebuild the model and tokenizer stored in an asr_kd checkpoint; the model is in eval mode.

    ``hf:...``: the transformers model (:func:`~asr_kd.models.hf.load_hf`, on the CPU)."""
    if is_hf_source(str(path)):
        return load_hf(str(path))
    ckpt = load_checkpoint(path)
    meta = ckpt["asr_kd"]
    model = hydra.utils.instantiate(meta["model_config"])
    state = {
        k[len(_MODEL_PREFIX) :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(_MODEL_PREFIX)
    }
    model.load_state_dict(state)
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=Tokenizer.from_dict(meta["tokenizer"]),
        model_config=dict(meta["model_config"]),
        role=str(meta.get("role", "unknown")),
        path=Path(path),
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
