"""int8 graphs: ONNX Runtime dynamic quantisation of any export directory's ``.onnx`` files.

``quantize_dir(src)`` writes ``<src>/int8/`` with the same file names (``full.onnx``,
``stream-c<C>-l<LC>.onnx``, or any other export's ``*.onnx``) and the directory's other files
(``tokens.txt`` ...) copied, so every tool that reads an export directory reads the int8 one as
it is: ``asr-kd-transcribe onnx=exp/onnx/student_kd/int8``, ``asr-kd-evaluate quantize=[int8]``.

What is quantised, and why (measured on the demo ``student_tiny``, README "int8"):

- the weight-carrying matrix products only: every ``Gemm`` whose weight is a constant is first
  rewritten as ``MatMul`` + ``Add`` (:func:`gemm_to_matmul`; ORT's dynamic quantiser handles
  ``MatMul``, not ``Gemm``), then ``quantize_dynamic`` gives int8 weights (per tensor, signed)
  and uint8 activations quantised on the fly per call; ORT fuses each into one
  ``DynamicQuantizeMatMul`` (bias included), so the graph keeps its node count (130 for the
  320 ms step, 152 full) — per-node cost, not arithmetic, dominates a chunk this small;
- not the attention products of two activations (``q @ K^T``, ``softmax @ V``), the depthwise
  conv ``Gather``, the subsampling ``Conv``s, LayerNorm, softmax, nor anything on the caches: the
  step graph's cache ``Concat`` and every cache output stay fp32, so caches carry no
  quantisation error from one chunk to the next beyond that of the int8 products;
- dynamic rather than static (calibrated QDQ): static's ``QuantizeLinear`` before every
  ``Gemm`` adds 26 nodes to the step graph (156 after ORT's fusions) for no better WER, and it
  needs calibration inputs per graph format (a step graph's caches), while dynamic applies to
  any exported graph, ours or sherpa-onnx's; per tensor rather than per channel: the same WER
  on the demo, a smaller file and fewer scale multiplies.

The int8 graphs keep the fp32 graph's metadata, with ``"quantize": "int8"`` added to the
``asr_kd`` entry. :data:`INT8_TOLERANCE` is the log-prob difference to torch that
``check_export`` accepts for them.

Usage:
    paths = quantize_dir("exp/onnx/student_kd")   # {"full.onnx": .../int8/full.onnx, ...}
    quantize_graph("model.onnx", "model.int8.onnx")
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from asr_kd.errors import ConfigError, MissingFileError

__all__ = [
    "INT8_DIR",
    "INT8_TOLERANCE",
    "QUANTIZE",
    "check_quantize",
    "gemm_to_matmul",
    "quantize_dir",
    "quantize_graph",
]

QUANTIZE = ("none", "int8")  # asr-kd-export quantize=..., asr-kd-evaluate quantize=[...]
INT8_DIR = "int8"  # <export dir>/int8/: the int8 graphs under the fp32 graphs' names
# max |ORT int8 - torch| log-prob accepted over every frame and token of check_export's random
# utterance (so set by the least likely tokens; the fp32 graphs: 1e-3). Measured: demo
# student_kd 0.90 (full) / 0.71 (320 ms step), teacher_small 0.17, the tests' tiny models 0.02
INT8_TOLERANCE = 2.0
_NOT_COPIED = {"export.json", "config.yaml"}  # they describe the fp32 export (and logs)


def check_quantize(value: str, option: str = "quantize") -> str:
    """``value`` if it is one of :data:`QUANTIZE`, else a ``ConfigError``."""
    if value not in QUANTIZE:
        raise ConfigError(f"{option}={value!r}: expected one of {list(QUANTIZE)}")
    return value


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every ``Gemm(A, W, b)`` with a constant ``W`` (alpha = beta = 1, A not transposed) ->
    ``MatMul(A, W')`` + ``Add(b)``, ``W'`` the stored ``W`` (transposed once if ``transB``).
    The same function; in place, also returned. Other ``Gemm``s (two activations) stay."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, used = [], {}
    for node in graph.node:
        attrs = _attrs(node)
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or node.input[1] not in inits or not plain or attrs.get("transA"):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB"):
            if weight not in used:
                w = numpy_helper.to_array(inits[weight]).T
                name = f"{weight}_matmul"
                graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), name))
                used[weight] = name
            weight = used[weight]
        biased = len(node.input) > 2 and node.input[2] != ""
        product = f"{node.output[0]}_matmul" if biased else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], node.name))
        if biased:
            nodes.append(
                helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], f"{node.name}_bias"
                )
            )
    del graph.node[:]
    graph.node.extend(nodes)
    needed = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def _mark_int8(model: onnx.ModelProto) -> None:
    """``"quantize": "int8"`` in the ``asr_kd`` metadata entry, when there is one."""
    for prop in model.metadata_props:
        if prop.key == "asr_kd":
            prop.value = json.dumps({**json.loads(prop.value), "quantize": "int8"})


def quantize_graph(src: str | Path, dst: str | Path) -> Path:
    """``src`` (fp32 ONNX) -> ``dst``: constant-weight matrix products int8 (module docstring),
    metadata kept. Returns ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise MissingFileError(f"ONNX graph to quantise not found: {src}")
    model = gemm_to_matmul(onnx.load(str(src)))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        plain = Path(tmp) / src.name
        onnx.save(model, str(plain))
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # not "please run pre-processing"
        try:
            quantize_dynamic(
                plain,
                Path(tmp) / "int8.onnx",
                op_types_to_quantize=["MatMul"],
                per_channel=False,
                weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            logging.getLogger().setLevel(quiet)
        quantized = onnx.load(str(Path(tmp) / "int8.onnx"))
    _mark_int8(quantized)
    onnx.save(quantized, str(dst))
    return dst


def quantize_dir(src: str | Path, dst: str | Path | None = None) -> dict[str, Path]:
    """Every ``*.onnx`` of export directory ``src`` -> ``dst`` (default ``src/int8``) under the
    same name, the other files copied (not ``export.json``, ``config.yaml``, ``*.log``, which
    describe the fp32 export). Returns file name -> int8 graph."""
    src = Path(src)
    dst = src / INT8_DIR if dst is None else Path(dst)
    graphs = sorted(p for p in src.glob("*.onnx") if not p.name.endswith(".ort-optimized.onnx"))
    if not graphs:
        raise MissingFileError(f"no .onnx graph to quantise in {src}: export it first")
    out = {p.name: quantize_graph(p, dst / p.name) for p in graphs}
    for p in src.iterdir():
        if p.is_file() and p.suffix not in (".onnx", ".log") and p.name not in _NOT_COPIED:
            shutil.copy2(p, dst / p.name)
    return out
