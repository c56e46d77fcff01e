"""The ONNX Runtime runners (asr_kd.inference.onnx): a step graph's spec rebuilt from its
metadata, caches bound by it, and graphs their metadata does not describe refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import BadFileError
from asr_kd.export.onnx import export_step
from asr_kd.inference.decoders import StreamingGreedyDecoder
from asr_kd.inference.onnx import OnnxStreamingCTC, OnnxStreamingDecoder, read_metadata
from asr_kd.models.loading import LoadedModel
from asr_kd.models.streaming import StepSpec
from tests.helpers.onnx_graphs import random_feats, tiny_loaded, torch_stream

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def student(tiny) -> LoadedModel:
    return tiny_loaded(tiny, streaming=True)


def test_runner_rebuilds_the_models_step_spec_and_binds_caches_by_it(tmp_path, tiny):
    """3 layers, 4 heads, K 7: the graph's inputs and outputs are the spec's, in order, and the
    runner, binding each cache to its source by the spec, streams like torch."""
    model = tiny(num_layers=3, num_heads=4, conv_kernel_size=7, vocab_size=29)
    loaded = LoadedModel(model, Tokenizer.char(), {}, "student", Path("<tiny, 3 layers>"))
    path = export_step(loaded, tmp_path / "step.onnx", 4, 2)
    spec = model.step_spec(4, 2)
    assert StepSpec.from_metadata(read_metadata(path)) == spec
    runner = OnnxStreamingCTC(path)
    assert runner.spec == spec
    graph_inputs = {i.name: tuple(i.shape) for i in runner.session.get_inputs()}
    graph_outputs = {o.name: tuple(o.shape) for o in runner.session.get_outputs()}
    assert list(graph_inputs.items()) == list(spec.input_shapes.items())
    assert list(graph_outputs.items()) == list(spec.output_shapes.items())
    feats = random_feats(loaded, 403)
    ref = torch_stream(loaded, feats, [37] * 11, 4, 2)
    got = [runner.accept(feats[s : s + 37].numpy()) for s in range(0, 403, 37)]
    got = np.concatenate([*got, runner.flush()])
    assert got.shape == ref.shape == (100, 29)
    assert np.abs(got - ref).max() < 1e-4
    decoder = OnnxStreamingDecoder(runner)
    torch_decoder = StreamingGreedyDecoder(model, loaded.tokenizer, 4, 2)
    for s in range(0, 403, 37):
        assert decoder.accept(feats[s : s + 37]) == torch_decoder.accept(feats[s : s + 37])
    assert decoder.finalize() == torch_decoder.finalize()


def _edited(path: Path, out: Path, edit) -> Path:
    proto = onnx.load(str(path))
    edit(proto)
    onnx.save(proto, str(out))
    return out


def test_runner_refuses_a_graph_its_metadata_does_not_describe(tmp_path, student):
    path = export_step(student, tmp_path / "step.onnx", 4, 2)

    def swap_caches(proto):
        meta = json.loads(proto.metadata_props[0].value)
        meta["caches"]["k_cache_0"], meta["caches"]["v_cache_0"] = "v_all_0", "k_all_0"
        proto.metadata_props[0].value = json.dumps(meta)

    with pytest.raises(BadFileError, match="caches"):
        OnnxStreamingCTC(_edited(path, tmp_path / "swapped.onnx", swap_caches))

    def rename_output(proto):
        old = proto.graph.output[1].name
        for node in proto.graph.node:
            node.input[:] = ["k_out_0" if i == old else i for i in node.input]
            node.output[:] = ["k_out_0" if o == old else o for o in node.output]
        proto.graph.output[1].name = "k_out_0"

    with pytest.raises(BadFileError, match=r"graph outputs .*k_out_0"):
        OnnxStreamingCTC(_edited(path, tmp_path / "renamed.onnx", rename_output))
