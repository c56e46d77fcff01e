"""``asr-kd-transcribe --ckpt hf:<dir>``: a transformers CTC model transcribes files (offline)."""

from __future__ import annotations

import torch

from asr_kd.cli.transcribe import main
from asr_kd.data.features import load_audio
from asr_kd.models.hf import load_hf


def test_transcribe_with_a_transformers_model(capsys, tiny_corpus_dir, hf_model_dir):
    model_dir = hf_model_dir("wav2vec2_conformer")
    flac = sorted((tiny_corpus_dir / "test").rglob("*.flac"))[0]
    assert main(["--ckpt", f"hf:{model_dir}", str(flac)]) == 0
    text = capsys.readouterr().out.strip()
    samples = torch.from_numpy(load_audio(flac)[0])
    expected = load_hf(f"hf:{model_dir}").transcribe(samples[None], torch.tensor([len(samples)]))
    assert text == expected[0] and text


def test_streaming_with_a_transformers_model_is_refused(capsys, tiny_corpus_dir, hf_model_dir):
    flac = sorted((tiny_corpus_dir / "test").rglob("*.flac"))[0]
    assert main(["--ckpt", f"hf:{hf_model_dir('hubert')}", "--streaming", str(flac)]) == 2
    assert "holds a full-context model (streaming=False)" in capsys.readouterr().err
