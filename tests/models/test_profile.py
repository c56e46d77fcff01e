"""Introspection: params, MACs per audio second (checked against a hand count), latency, size."""

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from asr_kd.config import CONF_DIR
from asr_kd.models import ConformerCTC
from asr_kd.models.profile import (
    algorithmic_latency_ms,
    count_params,
    macs_per_audio_second,
    model_size_mb,
)

CONF_MODEL = CONF_DIR / "model"


def model_with(num_layers, streaming=True, **kw):
    torch.manual_seed(0)
    return ConformerCTC(
        vocab_size=29,
        d_model=32,
        num_layers=num_layers,
        num_heads=2,
        ff_dim=64,
        conv_kernel_size=5,
        subsampling_channels=8,
        streaming=streaming,
        **kw,
    )


def test_one_layer_costs_its_hand_counted_macs():
    d, ff, k, seconds = 32, 64, 5, 4.0
    t = int(seconds * 100) // 4  # encoder frames
    per_frame = 2 * d * ff * 2 + 4 * d * d + 3 * d * d + d * k  # FFNs, qkv+out, conv pointwise, dw
    attention = 2 * t * t * d  # scores and weighted sum, full context
    one, two = model_with(1), model_with(2)
    extra = macs_per_audio_second(two, seconds=seconds) - macs_per_audio_second(
        one, seconds=seconds
    )
    assert extra == pytest.approx((per_frame * t + attention) / seconds, rel=1e-6)


def test_streaming_macs_are_bounded_by_the_left_context():
    model = model_with(2, default_left_chunks=2)
    full = macs_per_audio_second(model, None, seconds=10)
    streaming = macs_per_audio_second(model, 4, seconds=10)
    assert streaming < full
    # Per audio second, bounded left context costs the same on 3 s and on 10 s of audio.
    assert macs_per_audio_second(model, 4, seconds=3) == pytest.approx(streaming, rel=0.02)


def test_params_size_and_latency():
    model = model_with(2)
    assert count_params(model) == sum(p.numel() for p in model.parameters())
    assert model_size_mb(model) == pytest.approx((count_params(model) + 160) * 4 / 1e6)
    assert algorithmic_latency_ms(model, 8) == 320.0
    assert algorithmic_latency_ms(model, None) is None
    assert algorithmic_latency_ms(model_with(2, streaming=False), 8) is None
    assert algorithmic_latency_ms(model_with(2, subsampling_factor=6), 2) == 120.0


def test_config_budgets():
    """The issue's budgets: teacher_large ~100 M, student_small <= 10 M, tiny <= 1/8 MACs."""
    models = {
        n: hydra.utils.instantiate(OmegaConf.load(CONF_MODEL / f"{n}.yaml"))
        for n in ("teacher_large", "teacher_small", "student_small", "student_tiny")
    }
    assert 90e6 <= count_params(models["teacher_large"]) <= 110e6
    assert models["teacher_large"].layers[0].attn.proj.in_features == 512
    assert count_params(models["student_small"]) <= 10e6
    assert count_params(models["teacher_small"]) <= 6e6
    teacher, student = models["teacher_small"], models["student_tiny"]
    assert macs_per_audio_second(teacher) >= 8 * macs_per_audio_second(student)
    assert macs_per_audio_second(teacher) >= 8 * macs_per_audio_second(student, chunk_size=8)
    assert teacher.frame_shift_ms == student.frame_shift_ms
