"""ConformerCTC: shapes, padding, exact chunk-wise streaming, causality, dynamic chunks."""

import warnings

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from asr_kd.config import CONF_DIR
from asr_kd.models import ConformerCTC
from asr_kd.models.benchmark import synthetic_fbank

CONF_MODEL = CONF_DIR / "model"
TOL = 1e-4


def stream(model, feats, chunk_size, left_chunks, piece_sizes) -> torch.Tensor:
    """Feed (1, T, F) feats in pieces of the given sizes (cycled), then flush."""
    state = model.init_state(1, chunk_size, left_chunks)
    outs, start, i = [], 0, 0
    while start < feats.size(1):
        size = piece_sizes[i % len(piece_sizes)]
        lp, state = model.forward_chunk(feats[:, start : start + size], state)
        outs.append(lp)
        start, i = start + size, i + 1
    lp, state = model.flush(state)
    return torch.cat(outs + [lp], dim=1)


@pytest.mark.parametrize("factor", [2, 4, 6, 8])
def test_shapes_and_lengths_with_padding(factor, tiny):
    model = tiny(subsampling_factor=factor)
    lens = torch.tensor([97, 50, 8])
    log_probs, out_lens = model(torch.randn(3, 97, 80), lens)
    assert log_probs.shape == (3, 97 // factor, 11)
    assert out_lens.tolist() == (lens // factor).tolist()
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 97 // factor), atol=1e-5)
    assert model.frame_shift_ms == 10 * factor


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_return_hidden_gives_each_layer_output_and_the_same_log_probs(chunk_size, tiny):
    model = tiny(streaming=chunk_size is not None).eval()
    feats, lens = torch.randn(2, 64, 80), torch.tensor([64, 40])
    log_probs, out_lens = model(feats, lens, chunk_size=chunk_size)
    again, again_lens, hidden = model(feats, lens, chunk_size=chunk_size, return_hidden=True)
    assert torch.equal(again, log_probs) and torch.equal(again_lens, out_lens)
    assert len(hidden) == len(model.layers)
    assert all(h.shape == (2, 16, model.d_model) for h in hidden)
    assert torch.equal(model.ctc(hidden[-1]).log_softmax(-1), log_probs)  # the last layer's
    assert not torch.equal(hidden[0], hidden[-1])


@pytest.mark.parametrize("streaming", [False, True])
def test_inputs_shorter_than_one_encoder_frame(streaming, tiny):
    """Regression: T < subsampling factor used to crash in the attention reshape."""
    model = tiny(streaming=streaming)
    for t in (0, 3):
        log_probs, out_lens = model(torch.randn(2, t, 80), torch.tensor([t, 0]))
        assert log_probs.shape == (2, 0, 11) and out_lens.tolist() == [0, 0]
    log_probs, out_lens = model(torch.randn(2, 9, 80), torch.tensor([9, 2]))
    assert out_lens.tolist() == [2, 0] and torch.isfinite(log_probs).all()


@pytest.mark.parametrize("streaming, chunk_size", [(False, None), (True, None), (True, 2)])
def test_valid_outputs_do_not_depend_on_padding(streaming, chunk_size, tiny):
    model = tiny(streaming=streaming)
    feats = torch.randn(2, 120, 80)
    feats[1, 70:] = 0.0
    batch, out_lens = model(feats, torch.tensor([120, 70]), chunk_size, left_chunks=1)
    alone, _ = model(feats[1:, :70], torch.tensor([70]), chunk_size, left_chunks=1)
    n = int(out_lens[1])
    assert (batch[1, :n] - alone[0]).abs().max() < TOL
    # Garbage in the padding must not leak either.
    feats[1, 70:] = 1e3
    garbage, _ = model(feats, torch.tensor([120, 70]), chunk_size, left_chunks=1)
    assert (garbage[1, :n] - alone[0]).abs().max() < TOL


@pytest.mark.parametrize("chunk_size", [1, 4, 8, 16])
@pytest.mark.parametrize("left_chunks", [-1, 2, 4])
def test_streaming_equals_full_forward_with_same_chunk_mask(chunk_size, left_chunks, tiny):
    model = tiny()
    torch.manual_seed(chunk_size)
    feats = torch.randn(1, 401, 80)
    full, _ = model(feats, torch.tensor([401]), chunk_size, left_chunks)
    for pieces in ([4 * chunk_size], [1, 7, 0, 33, 2], [401]):
        streamed = stream(model, feats, chunk_size, left_chunks, pieces)
        assert streamed.shape == full.shape
        assert (streamed - full).abs().max().item() <= TOL, pieces


@pytest.mark.parametrize("chunk_size, left_chunks", [(1, 4), (4, 2), (8, -1), (16, 2)])
def test_streaming_equals_full_forward_on_real_fbank(chunk_size, left_chunks, tiny):
    feats = synthetic_fbank(2.7)
    model = tiny(subsampling_factor=4)
    model.set_cmvn(feats[0].mean(0), feats[0].std(0))
    full, _ = model(feats, torch.tensor([feats.size(1)]), chunk_size, left_chunks)
    streamed = stream(model, feats, chunk_size, left_chunks, [10, 3, 25])
    assert (streamed - full).abs().max().item() <= TOL


def test_equivalence_is_not_vacuous(tiny):
    """The chunk mask and left context change the output, so the tests above can fail."""
    model = tiny()
    feats = torch.randn(1, 200, 80)
    lens = torch.tensor([200])
    limited, _ = model(feats, lens, 4, 1)
    assert (model(feats, lens, 4, -1)[0] - limited).abs().max() > 1e-3
    assert (model(feats, lens)[0] - limited).abs().max() > 1e-3
    assert (stream(model, feats, 4, 2, [16]) - limited).abs().max() > 1e-3


def test_stream_crosses_the_precomputed_rotary_table(tiny):
    model = tiny(num_layers=1)
    feats = torch.randn(1, 4 * 1100 + 3, 80)  # 1100 encoder frames > the 1024-row table
    full, _ = model(feats, torch.tensor([feats.size(1)]), 16, 2)
    assert (stream(model, feats, 16, 2, [4 * 16 * 7]) - full).abs().max() <= TOL


def test_attention_cache_is_bounded_by_left_context(tiny):
    model = tiny()
    state = model.init_state(1, chunk_size=4, left_chunks=2)
    _, state = model.forward_chunk(torch.randn(1, 400, 80), state)
    assert state.att_cache.shape[3] == 2 * 4 and state.offset == 100 - 100 % 4
    assert state.cnn_cache.shape == (2, 1, 32, 4)
    unlimited = model.init_state(1, chunk_size=4, left_chunks=-1)
    _, unlimited = model.forward_chunk(torch.randn(1, 400, 80), unlimited)
    assert unlimited.att_cache.shape[3] == 100


def test_forward_chunk_emits_only_complete_chunks_and_keeps_state_immutable(tiny):
    model = tiny()
    state = model.init_state(1, chunk_size=4, left_chunks=-1)
    lp, state1 = model.forward_chunk(torch.randn(1, 15, 80), state)  # 3 encoder frames < chunk
    assert lp.shape == (1, 0, 11) and state.offset == 0 and state1.offset == 0
    lp, state2 = model.forward_chunk(torch.randn(1, 1, 80), state1)  # the 4th frame completes it
    assert lp.shape == (1, 4, 11) and state2.offset == 4
    tail, _ = model.flush(state2)
    assert tail.shape == (1, 0, 11)


@pytest.mark.parametrize("chunk_size, left_chunks", [(1, -1), (4, 2), (8, -1)])
def test_causality_future_frames_never_change_a_finished_chunk(chunk_size, left_chunks, tiny):
    model = tiny()
    feats = torch.randn(1, 160, 80)
    lens = torch.tensor([160])
    base, _ = model(feats, lens, chunk_size, left_chunks)
    for chunk in range(0, 40 // chunk_size - 1):
        end_in = 4 * chunk_size * (chunk + 1)  # first input frame after this chunk
        changed = feats.clone()
        changed[:, end_in:] = torch.randn_like(changed[:, end_in:])
        out, _ = model(changed, lens, chunk_size, left_chunks)
        n = chunk_size * (chunk + 1)
        assert torch.equal(out[:, :n], base[:, :n]), chunk
        assert not torch.allclose(out[:, n:], base[:, n:])  # the future itself did change


def test_full_context_teacher_sees_the_future(tiny):
    """The causality test above can fail: a full-context model is not causal."""
    model = tiny(streaming=False)
    feats = torch.randn(1, 160, 80)
    base, _ = model(feats, torch.tensor([160]))
    feats[:, 100:] += 1.0
    out, _ = model(feats, torch.tensor([160]))
    assert not torch.allclose(out[:, :20], base[:, :20])


def test_full_context_teacher_unaffected_by_chunk_args(tiny):
    model = tiny(streaming=False)
    feats, lens = torch.randn(2, 90, 80), torch.tensor([90, 60])
    ref, _ = model(feats, lens)
    with pytest.warns(UserWarning, match="full-context"):
        misused, _ = model(feats, lens, chunk_size=2, left_chunks=0)
    assert torch.equal(misused, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(feats, lens, chunk_size=None, left_chunks=3)  # no chunk: left context is moot
    with pytest.raises(ValueError, match="full-context"):
        model.init_state(1, 4, 2)
    assert model.sample_chunk_size() is None
    with pytest.raises(ValueError, match="train_chunk_sizes"):
        tiny(streaming=False, train_chunk_sizes=[4, None])


def test_dynamic_chunk_sampling_draws_from_the_set(tiny):
    model = tiny(train_chunk_sizes=[2, 4, None])
    torch.manual_seed(1)
    draws = [model.sample_chunk_size() for _ in range(300)]
    assert set(draws) == {2, 4, None}
    assert min(draws.count(c) for c in (2, 4, None)) > 60  # roughly uniform
    torch.manual_seed(1)
    assert [model.sample_chunk_size() for _ in range(300)] == draws  # seeded by torch


def test_training_step_with_sampled_chunk_has_gradients(tiny):
    model = tiny(dropout=0.1).train()
    feats, lens = torch.randn(2, 64, 80), torch.tensor([64, 40])
    log_probs, out_lens = model(feats, lens, model.sample_chunk_size(), model.default_left_chunks)
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),
        torch.tensor([[1, 2, 3], [4, 5, 0]]),
        out_lens,
        torch.tensor([3, 2]),
    )
    loss.backward()
    # every parameter learns: a None or all-zero gradient is a part cut off from the loss
    no_grad = [
        name
        for name, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().max() == 0
    ]
    assert no_grad == []


def test_cmvn_is_applied_first_and_saved(tiny):
    model = tiny()
    mean, std = torch.randn(80), torch.rand(80) + 0.5
    model.set_cmvn(mean, std)
    plain = tiny()
    plain.load_state_dict(model.state_dict())
    plain.set_cmvn(torch.zeros(80), torch.ones(80))
    feats = torch.randn(1, 40, 80)
    a, _ = model(feats, torch.tensor([40]))
    b, _ = plain((feats - mean) / std, torch.tensor([40]))
    assert (a - b).abs().max() < TOL
    assert torch.equal(model.state_dict()["cmvn_mean"], mean)
    with pytest.raises(ValueError, match="input_dim=80"):
        model.set_cmvn(torch.zeros(40), torch.ones(40))


@pytest.mark.parametrize(
    "name", ["teacher_large", "teacher_small", "student_small", "student_tiny"]
)
def test_model_configs_instantiate(name):
    model = hydra.utils.instantiate(OmegaConf.load(CONF_MODEL / f"{name}.yaml"))
    assert isinstance(model, ConformerCTC)
    assert model.vocab_size == 29 and model.frame_shift_ms == 40
    assert model.streaming == name.startswith("student")
    assert all(c is None or isinstance(c, int) for c in model.train_chunk_sizes)


# The keys of a one-layer model's state_dict as the code before the named ``_FeedForward``
# wrote them (commit 1ee5956): every checkpoint made so far has these, so they must not change.
ONE_LAYER_KEYS = [
    "cmvn_mean",
    "cmvn_std",
    *(f"subsampling.{p}.{t}" for p in ("conv.0", "conv.2", "out") for t in ("weight", "bias")),
    *(
        f"layers.0.{part}.{t}"
        for part in (
            *("ff1.0", "ff1.1", "ff1.4", "attn.norm", "attn.qkv", "attn.proj"),
            *("conv.norm_in", "conv.pointwise_in", "conv.depthwise", "conv.norm_dw"),
            *("conv.pointwise_out", "ff2.0", "ff2.1", "ff2.4", "norm"),
        )
        for t in ("weight", "bias")
    ),
    "ctc.weight",
    "ctc.bias",
]
BATCH_NORM_STATS = ["running_mean", "running_var", "num_batches_tracked"]


@pytest.mark.parametrize("streaming", [True, False])
def test_state_dict_keys_are_those_of_existing_checkpoints(tiny, streaming):
    model = tiny(streaming, num_layers=1, conv_norm="layer_norm" if streaming else "batch_norm")
    expected = list(ONE_LAYER_KEYS)
    if not streaming:
        at = expected.index("layers.0.conv.norm_dw.bias") + 1
        expected[at:at] = [f"layers.0.conv.norm_dw.{s}" for s in BATCH_NORM_STATS]
    assert list(model.state_dict()) == expected
    two = tiny(streaming, num_layers=2, conv_norm="layer_norm" if streaming else "batch_norm")
    layer_keys = [k for k in expected if k.startswith("layers.0.")]
    assert [k for k in two.state_dict() if k.startswith("layers.1.")] == [
        k.replace("layers.0.", "layers.1.") for k in layer_keys
    ]


def test_feed_forward_parts_are_named_and_are_the_checkpoint_entries(tiny):
    """The ONNX fold reads ``ff1.linear2`` etc.: the names must be the modules at 0, 1, 4."""
    ff = tiny().layers[0].ff1
    children = dict(ff.named_children())
    assert (ff.norm, ff.linear1, ff.dropout1, ff.linear2, ff.dropout2) == tuple(
        children[i] for i in "01345"
    )
    assert isinstance(ff.norm, torch.nn.LayerNorm) and ff.linear2.out_features == 32
