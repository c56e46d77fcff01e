"""The runtimes of ``asr-kd-evaluate``, one :class:`~asr_kd.evaluation.backends.base.Backend`
each, by name: the ``runtime`` entries a config may list (torch or onnx, and sherpa-onnx), and
``transformers``, which decodes the transformers models of a run whatever the runtime is.

A new runtime or decoding method is one more class here: the run asks each backend which models
it decodes and for its rows, never which backend it has.
"""

from __future__ import annotations

from asr_kd.evaluation.backends.base import Backend, Corpus
from asr_kd.evaluation.backends.fbank import OnnxBackend, TorchBackend
from asr_kd.evaluation.backends.hf import TransformersBackend
from asr_kd.evaluation.backends.sherpa import SherpaBackend, SherpaHlgBackend

__all__ = ["BACKENDS", "Backend", "Corpus"]

BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend
    for backend in (TorchBackend, OnnxBackend, SherpaBackend, SherpaHlgBackend, TransformersBackend)
}
