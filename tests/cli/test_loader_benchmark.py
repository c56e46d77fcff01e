"""python -m asr_kd.cli.loader_benchmark: per-worker throughput of each loading mode, and the
workers a GPU needs from it."""

from __future__ import annotations

import pytest

from asr_kd.cli.loader_benchmark import gpu_audio_rate, measure


def test_precomputed_features_load_several_times_faster_than_fbank_on_the_fly(
    prepared_data_dir, one_thread
):
    rates = measure(prepared_data_dir, "train", max_duration=30.0, passes=1)
    assert list(rates) == ["precomputed", "fbank", "speed_perturb", "data.speed_perturb"]
    assert all(cpu > 0 and wall > 0 for cpu, wall in rates.values())
    # lilcom reads against FLAC decode + fbank: about 7x on the AMD machine
    assert rates["precomputed"][0] > 2 * rates["fbank"][0]
    assert rates["precomputed"][0] > 2 * rates["speed_perturb"][0]


def test_a_gpus_audio_rate_is_its_achieved_flops_over_six_per_mac():
    # 1 GMAC per audio second: 6 GFLOPs a training second; 30 % of 1000 TFLOPS -> 50 000 s/s
    assert gpu_audio_rate(1e9, 0.3, 1000.0) == pytest.approx(50_000)
