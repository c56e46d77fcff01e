"""int8 graphs (asr_kd.export.quantize): they load, run, stay near fp32 and are smaller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from asr_kd.config import compose
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError, MissingFileError
from asr_kd.export.onnx import check_export, export_checkpoint, run
from asr_kd.export.quantize import (
    INT8_DIR,
    INT8_TOLERANCE,
    gemm_to_matmul,
    quantize_dir,
)
from asr_kd.inference.factory import make_decoder
from asr_kd.inference.onnx import OnnxCTC, OnnxStreamingCTC, read_metadata, step_file_name
from asr_kd.models.loading import LoadedModel

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def exported(tmp_path, tiny):
    """A tiny random student (D 32, V 29) exported: full + step graph (4 frames, 2 left)."""
    model = tiny(True, vocab_size=29, default_left_chunks=2)
    loaded = LoadedModel(model, Tokenizer.char(), {}, "student", Path("<tiny student>"))
    paths = export_checkpoint(loaded, tmp_path / "onnx", chunk_sizes=[4], left_chunks=2)
    (tmp_path / "onnx" / "tokens.txt").write_text("<blk> 0\n")  # another format's side file
    return loaded, paths


def test_int8_graphs_run_near_torch_and_are_smaller(exported):
    loaded, paths = exported
    int8 = quantize_dir(paths["full"].parent)
    assert sorted(int8) == ["full.onnx", step_file_name(4, 2)]
    assert all(p.parent.name == INT8_DIR for p in int8.values())
    int8_paths = {name: int8[path.name] for name, path in paths.items()}
    diffs = check_export(loaded, int8_paths)  # a random utterance, streamed in odd pieces
    assert all(0 < d <= INT8_TOLERANCE for d in diffs.values()), diffs  # 0: not quantised
    assert max(diffs.values()) < 0.1, diffs  # this model: 0.02 (full), 0.02 (step)
    for name, path in paths.items():
        assert int8_paths[name].stat().st_size < 0.6 * path.stat().st_size
        types = {n.op_type for n in onnx.load(str(int8_paths[name])).graph.node}
        assert "DynamicQuantizeLinear" in types and "MatMulInteger" in types
    assert (int8["full.onnx"].parent / "tokens.txt").read_text() == "<blk> 0\n"
    meta = read_metadata(int8_paths["stream-c4"])
    assert meta["quantize"] == "int8" and meta["kind"] == "step"
    assert "quantize" not in read_metadata(paths["stream-c4"])
    OnnxCTC(int8_paths["full"])  # the runners and the decoder factory open the int8 directory
    OnnxStreamingCTC(int8_paths["stream-c4"])
    decode = make_decoder("onnx", onnx=int8["full.onnx"].parent, chunk_size=4, left_chunks=2)
    assert isinstance(decode(np.zeros((50, 80), np.float32)), str)


def test_step_graph_caches_stay_fp32(exported):
    """Only constant-weight products are int8: the caches' Concat takes and gives float, and no
    cache (input, or the Concat of cache and chunk that attention reads) is quantised."""
    _, paths = exported
    step = quantize_dir(paths["full"].parent)[step_file_name(4, 2)]
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(step)))
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in proto.graph.input})
    types.update({v.name: v.type.tensor_type.elem_type for v in proto.graph.output})
    caches = {i.name for i in proto.graph.input if "_cache_" in i.name}
    concats = [n for n in proto.graph.node if n.op_type == "Concat" and caches & set(n.input)]
    assert len(concats) == len(caches) == 6  # k, v, conv per layer
    cache_tensors = caches | {n.output[0] for n in concats}
    for node in concats:
        for name in [i for i in node.input if i in caches] + list(node.output):
            assert types[name] == onnx.TensorProto.FLOAT, (node.name, name)
    quantised = {
        i
        for n in proto.graph.node
        if n.op_type in ("DynamicQuantizeLinear", "MatMulInteger")
        for i in n.input
    }
    assert not cache_tensors & quantised


def test_gemm_to_matmul_is_the_same_function(exported):
    _, paths = exported
    proto = gemm_to_matmul(onnx.load(str(paths["full"])))
    inits = {i.name for i in proto.graph.initializer}
    assert not [n for n in proto.graph.node if n.op_type == "Gemm" and n.input[1] in inits]
    feats = np.random.default_rng(0).normal(size=(61, 80)).astype(np.float32)
    ref = ort.InferenceSession(str(paths["full"])).run(None, {"feats": feats})[0]
    got = ort.InferenceSession(proto.SerializeToString()).run(None, {"feats": feats})[0]
    assert np.abs(got - ref).max() < 1e-4


def test_quantize_dir_needs_graphs(tmp_path):
    with pytest.raises(MissingFileError, match="no .onnx graph"):
        quantize_dir(tmp_path)


def test_export_cli_quantize_int8(tmp_path, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    out = tmp_path / "onnx"
    args = [f"ckpt={ckpt}", f"out_dir={out}", "chunk_sizes_ms=[160]"]
    summary = run(compose("export", [*args, "quantize=int8"]))
    assert set(summary) == {"full", "stream-c4", "full int8", "stream-c4 int8"}
    for name in ("full", "stream-c4"):
        fp32, int8 = summary[name], summary[f"{name} int8"]
        assert Path(int8["path"]).parent == out / INT8_DIR
        assert 0 < int8["max_abs_diff"] <= INT8_TOLERANCE and int8["mb"] < fp32["mb"]
    assert json.loads((out / "export.json").read_text()) == summary
    assert sorted(p.name for p in (out / INT8_DIR).iterdir()) == ["full.onnx", "stream-c4-l2.onnx"]
    with pytest.raises(RuntimeError, match="int8 export .* tolerance"):
        run(compose("export", [*args, "quantize=int8", "int8_tolerance=1e-6"]))
    with pytest.raises(ConfigError, match="quantize='int4'"):
        run(compose("export", [*args, "quantize=int4"]))
