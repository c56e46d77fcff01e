"""Writing one exported graph: ``torch.onnx.export`` at a fixed opset, and our metadata.

Shared by the two export formats, ours (:mod:`asr_kd.export.onnx`) and sherpa-onnx's
(:mod:`asr_kd.export.sherpa`): the model's facts in ``metadata_props["asr_kd"]`` (JSON), a
graph exported in eval mode.

Usage:
    meta = _metadata(loaded, kind="full", inputs=["feats"], outputs=["log_probs"])
    _save(FoldedGraph(model).eval(), (feats,), Path("full.onnx"), names, meta)
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from asr_kd.models.conformer import rotary_frequencies
from asr_kd.models.loading import LoadedModel

__all__ = ["METADATA_KEY", "OPSET"]

OPSET = 17
METADATA_KEY = "asr_kd"


def _metadata(loaded: LoadedModel, **extra) -> dict:
    """The graph's ``metadata_props["asr_kd"]``: the model's, then ``extra`` (a step graph's
    ``StepSpec.to_metadata()``, which repeats some of the model's keys with the same values)."""
    model = loaded.model
    return {
        "tokenizer": loaded.tokenizer.to_dict(),
        "vocab_size": model.vocab_size,
        "input_dim": model.input_dim,
        "frame_shift_ms": model.frame_shift_ms,
        "input_frame_shift_ms": model.frame_shift_ms // model.subsampling_factor,
        "subsampling_factor": model.subsampling_factor,
        "receptive_field": model.subsampling.receptive_field,
        "left_pad": model.subsampling.left_pad,
        "streaming": bool(model.streaming),
        "role": loaded.role,
        "checkpoint": str(loaded.path),
        "cmvn_mean": model.cmvn_mean.tolist(),
        "inv_freq": rotary_frequencies(model.d_model // model.num_heads).tolist(),
        **extra,
    }


def _save(graph: nn.Module, args: tuple, path: Path, names: dict, meta: dict) -> Path:
    """torch.onnx.export (TorchScript exporter: no dynamo, fixed opset) + metadata.

    ``graph`` must already be in eval mode: the exporter restores the wrapper's training flag
    recursively afterwards, so a fresh (training-mode) wrapper would leave the wrapped model in
    training mode (dropout, BatchNorm batch statistics). That, not the graph, made a first
    teacher export look 14 nats off torch.
    """
    if graph.training:
        raise ValueError("export a module in eval mode (see _save's docstring)")
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints: intended constants
        torch.onnx.export(graph, args, buf, dynamo=False, opset_version=OPSET, **names)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path
