"""StepSpec: the streaming step's numbers and step-graph interface, derived once from the model."""

import doctest
import json

import numpy as np
import pytest
import torch

from asr_kd.errors import BadFileError
from asr_kd.models import streaming
from asr_kd.models.conformer import rotary_frequencies
from asr_kd.models.streaming import StepSpec


def test_doctests_run():
    assert doctest.testmod(streaming).failed == 0


@pytest.mark.parametrize("factor", [2, 4, 6, 8])
@pytest.mark.parametrize("chunk_size", [1, 4])
def test_window_gives_one_chunk_and_hop_starts_the_next(tiny, factor, chunk_size):
    model = tiny(subsampling_factor=factor)
    spec, sub = model.step_spec(chunk_size, 2), model.subsampling
    assert (spec.subsampling_factor, spec.receptive_field) == (sub.factor, sub.receptive_field)
    for n in range(3 * spec.window):  # the frames the runner's flush counts = torch's
        assert spec.output_frames(n) == sub.num_outputs(n), n
    assert spec.output_frames(spec.window) == chunk_size
    assert spec.output_frames(spec.window - 1) == chunk_size - 1
    x = torch.randn(1, spec.hop + spec.window, 80)
    both = sub.forward_valid(x)  # two chunks in one pass, as forward_chunk does
    second = sub.forward_valid(x[:, spec.hop :])  # the runner's second window alone
    assert both.shape[1] == 2 * chunk_size and second.shape[1] == chunk_size
    assert (both[:, chunk_size:] - second).abs().max() < 1e-6
    state = model.init_state(3, chunk_size, 2)
    assert state.spec == spec and state.input_buffer.shape == (3, spec.left_pad, 80)
    assert spec.left_pad == sub.left_pad


def test_caches_pair_each_input_with_its_own_layers_output(tiny):
    """The step graph's interface, spelled out: names, shapes, which output feeds which input."""
    spec = tiny(num_layers=3).step_spec(4, 2)  # D 32, K 5, C 4, Tc 8
    expected = [
        (f"{kind}_cache_{i}", f"{kind}_all_{i}", i, kind, rows, source_rows, 32, 4)
        for i in range(3)
        for kind, rows, source_rows in (("k", 8, 12), ("v", 8, 12), ("conv", 4, 9))
    ]
    assert [tuple(vars(c).values()) for c in spec.caches] == expected
    assert list(spec.input_shapes.items())[:4] == [
        ("feats", (1, 1, 4 * 3 + 7, 80)),
        ("cos", (4, 3 * 32)),
        ("sin", (4, 3 * 32)),
        ("mask", (1, 12)),
    ]
    assert list(spec.input_shapes)[4:] == [c.name for c in spec.caches]
    assert list(spec.output_shapes.items())[0] == ("log_probs", (4, 11))
    assert list(spec.output_shapes)[1:] == [c.source for c in spec.caches]


def test_rotary_table_is_the_models_tiled_per_query_copy(tiny):
    model = tiny(num_heads=4)  # Dh 8: 4 query copies + keys = 5 * 32 columns = 20 tiles
    spec = model.step_spec(4, 2)
    assert spec.inv_freq == tuple(rotary_frequencies(8).tolist())
    cos, sin = spec.rotary_table(1030)
    assert cos.shape == sin.shape == (1030, 5 * 32) and cos.dtype == np.float32
    assert np.array_equal(cos, np.tile(cos[:, :8], (1, 20)))
    torch_cos, torch_sin = model._rotary(0, 1030)  # (positions, Dh) of forward / forward_chunk
    assert np.abs(cos[:, :8] - torch_cos.numpy()).max() < 1e-5
    assert np.abs(sin[:, :8] - torch_sin.numpy()).max() < 1e-5


def test_per_head_query_copies_only_where_their_extra_products_are_cheap(tiny):
    from asr_kd.models.benchmark import model_from_config

    tiny, small = model_from_config("student_tiny"), model_from_config("student_small")
    tiny_spec, small_spec = tiny.step_spec(8, 4), small.step_spec(8, 4)  # D 64 H 2, D 192 H 4
    assert tiny_spec.head_copies and tiny_spec.rotary_width == 3 * 64
    assert tiny.step_spec(16, 4).head_copies and not small.step_spec(4, 4).head_copies
    assert not small_spec.head_copies and small_spec.rotary_width == 2 * 192
    assert small_spec.rotary_table(3)[0].shape == (3, 2 * 192)


def test_spec_survives_the_json_metadata(tiny):
    spec = tiny(num_layers=3, num_heads=4, subsampling_factor=6).step_spec(4, 3)
    meta = json.loads(json.dumps({"kind": "step", "other": 1, **spec.to_metadata()}))
    assert StepSpec.from_metadata(meta) == spec
    assert meta["caches"] == {c.name: c.source for c in spec.caches}
    assert meta["input_shapes"]["k_cache_2"] == [12, 32] and meta["num_layers"] == 3


def test_metadata_that_disagrees_with_its_spec_is_refused(tiny):
    meta = tiny().step_spec(4, 2).to_metadata()
    swapped = {**meta, "caches": {**meta["caches"], "k_cache_0": "v_all_0"}}
    with pytest.raises(BadFileError, match=r"g\.onnx: its stored \['caches'\]"):
        StepSpec.from_metadata(swapped, "g.onnx")
    shapes = {**meta["input_shapes"], "conv_cache_1": [5, 32]}
    with pytest.raises(BadFileError, match="input_shapes"):
        StepSpec.from_metadata({**meta, "input_shapes": shapes}, "g.onnx")
    old = {k: v for k, v in meta.items() if k != "d_model"}  # a graph of an older asr_kd
    with pytest.raises(BadFileError, match=r"no step-spec field\(s\) \['d_model'\]"):
        StepSpec.from_metadata(old, "g.onnx")


def test_unlimited_left_context_streams_in_torch_but_has_no_fixed_caches(tiny):
    spec = tiny().step_spec(4, -1)
    assert spec.cached_frames is None and spec.window == 19
    for interface in ("caches", "input_shapes", "mask_shape"):
        with pytest.raises(ValueError, match="finite attention cache"):
            getattr(spec, interface)
    for args, message in (((4, -2), "left_chunks must be"), ((0, 2), "chunk_size must be")):
        with pytest.raises(ValueError, match=message):
            tiny().step_spec(*args)
        with pytest.raises(ValueError, match=message):
            tiny().init_state(1, *args)
    with pytest.raises(ValueError, match="full-context"):
        tiny(streaming=False).step_spec(4, 2)
