"""Codecs of stored teacher layers: error bounds, specs, and one frame at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_kd.distill.store.codecs import (
    CodecStats,
    codec_bytes_per_frame,
    decode_hidden,
    encode_hidden,
    fit_codec,
    parse_compress,
)
from asr_kd.errors import ConfigError


def _frames(rank: int, dim: int = 16, count: int = 500) -> np.ndarray:
    gen = np.random.default_rng(0)
    return (gen.normal(size=(count, rank)) @ gen.normal(size=(rank, dim)) * 2 + 1).astype(
        np.float32
    )


def _fit(spec: str, frames: np.ndarray) -> np.ndarray:
    stats = CodecStats(frames.shape[1])
    for part in np.array_split(frames, 3):  # fitted in pieces, as the dump does
        stats.update(part)
    return fit_codec(spec, stats)


def _round_trip(spec: str, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    params = _fit(spec, frames)
    codes = encode_hidden(spec, params, frames)
    return params, decode_hidden(spec, params, torch.from_numpy(codes)).numpy()


def test_int8_error_is_within_half_a_step_per_channel():
    frames = _frames(rank=16)
    params, back = _round_trip("int8", frames)
    assert np.all(np.abs(back - frames) <= params[1] / 2 * (1 + 1e-4) + 1e-6)
    assert encode_hidden("int8", params, frames).dtype == np.int8


def test_pca_keeps_what_lies_in_its_subspace_and_loses_the_rest():
    frames = _frames(rank=3)
    _, back = _round_trip("pca3", frames)
    scale = np.abs(frames).max()
    assert np.abs(back - frames).max() < 2e-3 * scale  # fp16 coefficients only
    _, back = _round_trip("pca1", frames)
    assert np.abs(back - frames).max() > 0.1 * scale  # two of three directions dropped


def test_none_stores_fp16_frames():
    frames = _frames(rank=4)
    params, back = _round_trip("none", frames)
    assert params.shape == (0, 16)
    assert np.array_equal(back, frames.astype(np.float16).astype(np.float32))


def test_compression_specs():
    assert parse_compress("pca8") == ("pca", 8)
    for bad in ("pca0", "pca", "int4", "PCA8"):
        with pytest.raises(ConfigError, match="hidden_compress"):
            parse_compress(bad)
    with pytest.raises(ConfigError, match="20 coefficients > layer width 16"):
        _round_trip("pca20", _frames(rank=3))
    with pytest.raises(ConfigError, match="hidden_compress=int8: no train frames to fit it on"):
        fit_codec("int8", CodecStats(16))


@pytest.mark.parametrize("spec", ["none", "int8", "pca4"])
def test_a_padded_batch_codes_as_its_frames_one_at_a_time(spec):
    frames = _frames(rank=6).reshape(5, 100, 16)  # (B, T', D)
    params = _fit(spec, frames.reshape(-1, 16))
    codes = encode_hidden(spec, params, frames)
    each = [encode_hidden(spec, params, frame[None])[0] for frame in frames.reshape(-1, 16)]
    each = np.stack(each).reshape(codes.shape)
    assert codes.shape == (5, 100, codec_bytes_per_frame(spec, 16) // codes.itemsize)
    if spec == "pca4":  # a matrix product: the summation order may differ by one fp16 step
        np.testing.assert_allclose(codes, each, rtol=2**-10, atol=1e-6)
    else:  # elementwise: the same bytes
        assert codes.tobytes() == each.tobytes()
    back = decode_hidden(spec, params, torch.from_numpy(codes))
    back_each = decode_hidden(spec, params, torch.from_numpy(codes.reshape(500, -1)))
    torch.testing.assert_close(back, back_each.reshape(5, 100, 16), rtol=1e-6, atol=1e-6)
