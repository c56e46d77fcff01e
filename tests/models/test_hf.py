"""Transformers CTC models through ``hf:<dir>`` (asr_kd/models/hf.py): the posteriors asr_kd gets
are the model's own, on the same padded batch, for three families; lengths, hidden states,
frame shifts, the weights' hash and the errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from asr_kd.errors import MissingFileError
from asr_kd.models.hf import load_hf, weights_sha256
from asr_kd.models.loading import load_model

FRAME_SHIFT_MS = {"wav2vec2_conformer": 20.0, "hubert": 20.0, "parakeet": 80.0}
AUDIO_LENS = [24000, 17001, 9000]  # 1.5 s, an odd length, 0.56 s: padding in every position


def _padded_audio() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    audio = torch.zeros(len(AUDIO_LENS), max(AUDIO_LENS))
    for b, n in enumerate(AUDIO_LENS):
        audio[b, :n] = 0.1 * torch.randn(n, generator=g)
    return audio, torch.tensor(AUDIO_LENS)


def _reference(model_dir, audio, lens):
    """The transformers model itself on the same utterances, padded by its own extractor."""
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    extractor = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCTC.from_pretrained(model_dir, local_files_only=True).eval()
    waves = [audio[b, :n].numpy() for b, n in enumerate(lens.tolist())]
    inputs = extractor(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return out.logits.log_softmax(-1), out.hidden_states, inputs


@pytest.mark.parametrize("family", ["wav2vec2_conformer", "hubert", "parakeet"])
def test_posteriors_are_the_models_own_log_softmax_on_the_padded_batch(hf_model_dir, family):
    model_dir = hf_model_dir(family)
    loaded = load_model(f"hf:{model_dir}")
    audio, lens = _padded_audio()
    with torch.no_grad():
        log_probs, out_lens, hidden = loaded.model(audio, lens, hidden_layers=(1, 2))
    ref, ref_hidden, inputs = _reference(model_dir, audio, lens)
    assert log_probs.shape == ref.shape
    assert (log_probs - ref).abs().max().item() <= 1e-5
    for layer, h in zip((1, 2), hidden, strict=True):
        assert (h - ref_hidden[layer]).abs().max().item() <= 1e-5
    assert loaded.model.frame_shift_ms == FRAME_SHIFT_MS[family]
    # every utterance's own length: about its duration / frame shift, the longest = the batch
    assert out_lens[0] == log_probs.shape[1]
    expected = [n / 16 / FRAME_SHIFT_MS[family] for n in AUDIO_LENS]
    assert np.allclose(out_lens.tolist(), expected, atol=1.5)
    assert ("attention_mask" in inputs) == (family != "hubert")  # hubert: zero padding, no mask


def test_a_changed_weight_file_changes_the_hash(hf_model_dir, tmp_path):
    copy = shutil.copytree(hf_model_dir("wav2vec2_conformer"), tmp_path / "copy")
    before = weights_sha256(copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert weights_sha256(copy) != before


def test_a_directory_without_a_model_is_one_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match="not a transformers CTC model"):
        load_hf(f"hf:{tmp_path}")
    with pytest.raises(MissingFileError, match="no directory ./nowhere"):
        load_hf("hf:./nowhere")


def test_greedy_transcripts_use_the_student_spelling(hf_model_dir):
    loaded = load_hf(f"hf:{hf_model_dir('parakeet')}")
    audio, lens = _padded_audio()
    texts = loaded.transcribe(audio, lens)
    assert len(texts) == 3 and all(t == t.upper() for t in texts)
