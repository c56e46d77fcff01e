"""A model rebuilt from an asr_kd checkpoint, and where it runs; the table of model sources.

A source string names a model: an asr_kd checkpoint path, or ``hf:<dir or hub id>[@revision]``
for a transformers CTC model (:func:`asr_kd.models.hf.load_hf`, whose model reads 16 kHz audio,
not fbank). :data:`MODEL_SOURCES` maps the prefix of a source string to how that kind of model
loads and how its weights are hashed; :func:`load_model` and :func:`source_sha256` read it,
and the teachers of :mod:`asr_kd.distill.teacher` are keyed by the same prefixes. It sits in
this layer because evaluate, transcribe and export load models by source string too.

Usage:
    loaded = load_model("exp/teacher/checkpoints/last.ckpt")
    log_probs, out_lens = loaded.model(feats, feat_lens)
    print(loaded.tokenizer.decode(ids))
    init_weights_from(model, tokenizer, "exp/student_kd/checkpoints/last.ckpt", model_config)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
import torch
from torch import nn

from asr_kd.checkpoint import file_sha256, load_checkpoint
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError
from asr_kd.models.decode import greedy_ctc
from asr_kd.models.hf import hf_weights_sha256, load_hf

__all__ = [
    "MODEL_SOURCES",
    "LoadedModel",
    "ModelSource",
    "init_weights_from",
    "load_checkpoint_model",
    "load_model",
    "resolve_device",
    "source_prefix",
    "source_sha256",
]

_MODEL_PREFIX = "model."


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with what is needed to decode."""

    model: nn.Module
    tokenizer: Any  # asr_kd.data.tokenizer.Tokenizer
    model_config: dict
    role: str
    path: Path

    def decode_ids(self, log_probs: torch.Tensor, lens: torch.Tensor) -> list[str]:
        """Greedy CTC on (B, T', V) log-probs with (B,) valid frames -> B texts."""
        ids = greedy_ctc(log_probs, lens, blank_id=self.tokenizer.blank_id)
        return [self.tokenizer.decode(seq) for seq in ids]


def load_checkpoint_model(path: str | os.PathLike) -> LoadedModel:
    """Rebuild the model and tokenizer stored in an asr_kd checkpoint; the model is in eval mode."""
    ckpt = load_checkpoint(path)
    meta = ckpt["asr_kd"]
    model = hydra.utils.instantiate(meta["model_config"])
    if getattr(model, "reads_audio", False):
        run_dir = Path(path).resolve().parent.parent
        raise ConfigError(
            f"{path} holds a transformers model (model=hf_*), for resume only: use "
            f"hf:{run_dir / 'hf_model'} (or hf_model_averaged), written at the end of its run"
        )
    model.load_state_dict(_model_state(ckpt))
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=Tokenizer.from_dict(meta["tokenizer"]),
        model_config=dict(meta["model_config"]),
        role=str(meta.get("role", "unknown")),
        path=Path(path),
    )


@dataclass(frozen=True)
class ModelSource:
    """One kind of source string: ``load(source)`` -> a loaded model on the CPU (a
    :class:`LoadedModel` or its peer), ``sha256(source)`` -> the hash of its weights as the soft
    targets' fingerprint records it (None: not known without downloading)."""

    load: Callable[[str], Any]
    sha256: Callable[[str], str | None]


# The longest key that starts the source string names its kind ("": an asr_kd checkpoint).
MODEL_SOURCES: dict[str, ModelSource] = {
    "": ModelSource(load_checkpoint_model, file_sha256),
    "hf:": ModelSource(load_hf, hf_weights_sha256),
}


def source_prefix(source: str) -> str:
    """The key of :data:`MODEL_SOURCES` that names ``source``'s kind.

    >>> source_prefix("hf:facebook/wav2vec2-base-960h"), source_prefix("exp/t/last.ckpt")
    ('hf:', '')
    """
    return max((p for p in MODEL_SOURCES if str(source).startswith(p)), key=len)


def load_model(source: str | os.PathLike) -> Any:
    """The model a source string names (:data:`MODEL_SOURCES`), on the CPU, in eval mode: an
    asr_kd checkpoint's :class:`LoadedModel`, or the loaded transformers model of ``hf:...``."""
    return MODEL_SOURCES[source_prefix(str(source))].load(str(source))


def source_sha256(source: str | os.PathLike) -> str | None:
    """The SHA-256 of the weights a source string names (:data:`MODEL_SOURCES`)."""
    return MODEL_SOURCES[source_prefix(str(source))].sha256(str(source))


def _model_state(ckpt: dict) -> dict:
    """The model's entries of a checkpoint's ``state_dict`` (the ``model.`` prefix removed)."""
    return {
        k[len(_MODEL_PREFIX) :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(_MODEL_PREFIX)
    }


def init_weights_from(
    model: nn.Module, tokenizer: Tokenizer, path: str | os.PathLike, model_config: dict
) -> dict:
    """Load the model weights of checkpoint ``path`` into ``model`` (``init_from=``).

    Every state entry is taken from the checkpoint, the CMVN buffers included: its weights
    were learnt on features normalised that way. Only weights: no optimizer, schedule or step.

    Args:
        model: the run's freshly built model. tokenizer: the run's (data dir's) tokenizer.
        path: an asr_kd checkpoint (read with ``weights_only=True``).
        model_config: the run's model config (named in the error when shapes differ).

    Returns:
        the checkpoint's ``asr_kd`` metadata.

    Raises:
        ConfigError: another tokenizer, or a state entry missing, unexpected or of another
            shape (naming the entry, both shapes, the file and the model options that differ).
    """
    ckpt = load_checkpoint(path)
    meta = ckpt["asr_kd"]
    theirs = Tokenizer.from_dict(meta["tokenizer"])
    if theirs.fingerprint != tokenizer.fingerprint:
        raise ConfigError(
            f"init_from={path}: its tokenizer ({theirs.kind}, vocab {theirs.vocab_size}, "
            f"{theirs.fingerprint}) != this run's ({tokenizer.kind}, vocab "
            f"{tokenizer.vocab_size}, {tokenizer.fingerprint}); expected the same tokenizer: "
            "data prepared with the checkpoint's (tokenizer=char is the same for every corpus; "
            "a BPE is trained on each data dir's train text)"
        )
    state, ours = _model_state(ckpt), model.state_dict()
    problem = next(filter(None, (_mismatch(n, state, ours) for n in sorted({*state, *ours}))), "")
    if problem:
        differ = _config_differences(meta.get("model_config", {}), model_config)
        raise ConfigError(
            f"init_from={path}: parameter {problem}; expected the same model config"
            f"{f' (checkpoint vs this run: {differ})' if differ else ''}: set model.* as the "
            "checkpoint's or choose a checkpoint of this model"
        )
    model.load_state_dict(state)
    return meta


def _mismatch(name: str, theirs: dict, ours: dict) -> str:
    """What is wrong with state entry ``name`` (checkpoint ``theirs``, run ``ours``); "" if fine."""
    if name not in theirs:
        return f"{name} {tuple(ours[name].shape)} of this run's model is not in the checkpoint"
    if name not in ours:
        return f"{name} {tuple(theirs[name].shape)} of the checkpoint is not in this run's model"
    if theirs[name].shape != ours[name].shape:
        return (
            f"{name} has shape {tuple(theirs[name].shape)} in the checkpoint, "
            f"{tuple(ours[name].shape)} in this run's model"
        )
    return ""


def _config_differences(theirs: dict, ours: dict) -> str:
    """``d_model 64 vs 128, num_layers 3 vs 4``: the model options that differ."""
    keys = sorted({*theirs, *ours}, key=str)
    return ", ".join(
        f"{key} {theirs.get(key)} vs {ours.get(key)}"
        for key in keys
        if theirs.get(key) != ours.get(key)
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
