"""Tiny models and inputs shared by the ONNX export tests and the ONNX runner tests.

Usage: ``from tests.helpers.onnx_graphs import random_feats, tiny_loaded, torch_stream``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.models.loading import LoadedModel


def tiny_loaded(tiny, streaming: bool) -> LoadedModel:
    """A tiny random model, char vocabulary; the full-context one with BatchNorm statistics."""
    model = tiny(
        streaming,
        vocab_size=29,
        default_left_chunks=2 if streaming else -1,
        conv_norm="layer_norm" if streaming else "batch_norm",
    )
    for layer in model.layers:
        if layer.conv.batch_norm:
            layer.conv.norm_dw.running_mean.normal_()
            layer.conv.norm_dw.running_var.uniform_(0.5, 2.0)
            layer.conv.norm_dw.weight.data.normal_()
    name = "student" if streaming else "teacher"
    return LoadedModel(model, Tokenizer.char(), {}, name, Path(f"<tiny {name}>"))


def random_feats(loaded: LoadedModel, frames: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    model = loaded.model
    return model.cmvn_mean + model.cmvn_std * torch.randn(frames, 80, generator=gen)


def torch_stream(loaded, feats, pieces, chunk_size, left_chunks):
    model = loaded.model
    state = model.init_state(1, chunk_size, left_chunks)
    out, start = [], 0
    for n in pieces:
        lp, state = model.forward_chunk(feats[None, start : start + n], state)
        out.append(lp[0])
        start += n
    out.append(model.flush(state)[0][0])
    return torch.cat(out).numpy()
