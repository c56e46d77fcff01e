"""int8 graphs: ONNX Runtime dynamic quantisation of any export directory's ``.onnx`` files.

``quantize_dir(src)`` writes ``<src>/int8/`` with the same file names (``full.onnx``,
``stream-c<C>-l<LC>.onnx``, or any other export's ``*.onnx``) and the directory's other files
(``tokens.txt`` ...) copied, so every tool that reads an export directory reads the int8 one as
it is: ``asr-kd-transcribe onnx=exp/onnx/student_kd/int8``, ``asr-kd-evaluate quantize=[int8]``.

What is quantised, and why:

- the weight-carrying matrix products only (``MatMul`` and ``Gemm`` with a constant weight:
  ORT's dynamic quantiser rewrites each ``Gemm`` as ``MatMul`` + ``Add`` itself), with weights
  quantised once per tensor and activations quantised on the fly per call; ORT fuses each into
  one ``DynamicQuantizeMatMul`` (bias included), so the graph keeps its node count: per-node
  cost, not arithmetic, dominates a small streaming chunk;
- not the attention products of two activations (``q @ K^T``, ``softmax @ V``), the depthwise
  conv ``Gather``, the subsampling ``Conv``s, LayerNorm, softmax, nor anything on the caches: the
  step graph's cache ``Concat`` and every cache output stay fp32, so caches carry no
  quantisation error from one chunk to the next beyond that of the int8 products;
- dynamic rather than static (calibrated QDQ): static adds a ``QuantizeLinear`` before every
  product and needs calibration inputs per graph format (a step graph's caches), while dynamic
  applies to any exported graph, ours or sherpa-onnx's; per tensor rather than per channel: a
  smaller file and fewer scale multiplies, for the same WER on the demo (docs/deploy.md).

The weight and activation types are a scheme of :data:`INT8_SCHEMES`, by default ``u8u8``
(uint8 activations and weights). ORT's default, ``u8s8`` (int8 weights), runs on x86 CPUs without
AVX-512 VNNI through ``VPMADDUBSW``, whose 16-bit sums saturate: on an AVX2-only CPU such a graph
is far from the fp32 one (ONNX Runtime's quantisation guide, "when and why do I need to try
U8U8"), while the same file is accurate on a VNNI CPU, so a graph exported on one machine and run
on another can silently lose accuracy. ``u8u8`` multiplies through 16-bit products that cannot
saturate on any x86 kernel; ``u8s8-7bit`` (``reduce_range``) avoids the saturation by giving the
weights 7 bits, at some precision on every CPU. docs/deploy.md has both measured.

The int8 graphs keep the fp32 graph's metadata, with ``"quantize": "int8"`` and
``"int8_scheme": <scheme>`` added to the ``asr_kd`` entry. :data:`INT8_TOLERANCE` is the log-prob difference to torch that
``check_export`` accepts for them.

Usage:
    paths = quantize_dir("exp/onnx/student_kd")   # {"full.onnx": .../int8/full.onnx, ...}
    quantize_graph("model.onnx", "model.int8.onnx", scheme="u8s8-7bit")
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import onnx

from asr_kd.errors import ConfigError, MissingFileError

__all__ = [
    "DEFAULT_INT8_SCHEME",
    "INT8_DIR",
    "INT8_SCHEMES",
    "INT8_TOLERANCE",
    "QUANTIZE",
    "check_int8_scheme",
    "check_quantize",
    "quantize_dir",
    "quantize_graph",
]

QUANTIZE = ("none", "int8")  # asr-kd-export quantize=..., asr-kd-evaluate quantize=[...]
INT8_DIR = "int8"  # <export dir>/int8/: the int8 graphs under the fp32 graphs' names
# max |ORT int8 - torch| log-prob accepted over every frame and token of check_export's random
# utterance: set by the least likely tokens, so far above the fp32 graphs' 1e-3 (the demo's models
# are up to ~0.7 off with u8u8, the tests' tiny models 0.02; docs/deploy.md "int8")
INT8_TOLERANCE = 2.0
# scheme -> (weights signed, reduce_range): the arguments of ORT's quantize_dynamic that differ
INT8_SCHEMES = {"u8u8": (False, False), "u8s8": (True, False), "u8s8-7bit": (True, True)}
DEFAULT_INT8_SCHEME = "u8u8"  # accurate on AVX2 and on AVX-512 VNNI alike (module docstring)
_NOT_COPIED = {"export.json", "config.yaml"}  # they describe the fp32 export (and logs)


def check_quantize(value: str, option: str = "quantize") -> str:
    """``value`` if it is one of :data:`QUANTIZE`, else a ``ConfigError``."""
    if value not in QUANTIZE:
        raise ConfigError(f"{option}={value!r}: expected one of {list(QUANTIZE)}")
    return value


def _mark_int8(model: onnx.ModelProto, scheme: str) -> None:
    """``"quantize": "int8"`` and the scheme in the ``asr_kd`` metadata entry, when there is one."""
    for prop in model.metadata_props:
        if prop.key == "asr_kd":
            entry = {**json.loads(prop.value), "quantize": "int8", "int8_scheme": scheme}
            prop.value = json.dumps(entry)


def check_int8_scheme(scheme: str) -> str:
    """``scheme`` if it is one of :data:`INT8_SCHEMES`, else a ``ConfigError``."""
    if scheme not in INT8_SCHEMES:
        raise ConfigError(f"int8_scheme={scheme!r}: expected one of {list(INT8_SCHEMES)}")
    return scheme


def quantize_graph(src: str | Path, dst: str | Path, scheme: str = DEFAULT_INT8_SCHEME) -> Path:
    """``src`` (fp32 ONNX) -> ``dst``: constant-weight matrix products int8 with ``scheme``
    (module docstring), metadata kept. Returns ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    signed, reduce_range = INT8_SCHEMES[check_int8_scheme(scheme)]
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise MissingFileError(f"ONNX graph to quantise not found: {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # not "please run pre-processing"
        try:
            quantize_dynamic(
                src,
                Path(tmp) / "int8.onnx",
                op_types_to_quantize=["MatMul"],
                per_channel=False,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            logging.getLogger().setLevel(quiet)
        quantized = onnx.load(str(Path(tmp) / "int8.onnx"))
    _mark_int8(quantized, scheme)
    onnx.save(quantized, str(dst))
    return dst


def quantize_dir(
    src: str | Path, dst: str | Path | None = None, scheme: str = DEFAULT_INT8_SCHEME
) -> dict[str, Path]:
    """Every ``*.onnx`` of export directory ``src`` -> ``dst`` (default ``src/int8``) under the
    same name, quantised with ``scheme``, the other files copied (not ``export.json``,
    ``config.yaml``, ``*.log``, which describe the fp32 export). Returns file name -> int8 graph."""
    src = Path(src)
    dst = src / INT8_DIR if dst is None else Path(dst)
    graphs = sorted(p for p in src.glob("*.onnx") if not p.name.endswith(".ort-optimized.onnx"))
    if not graphs:
        raise MissingFileError(f"no .onnx graph to quantise in {src}: export it first")
    out = {p.name: quantize_graph(p, dst / p.name, scheme) for p in graphs}
    for p in src.iterdir():
        if p.is_file() and p.suffix not in (".onnx", ".log") and p.name not in _NOT_COPIED:
            shutil.copy2(p, dst / p.name)
    return out
