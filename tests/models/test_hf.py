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


_TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
    intermediate_size=64, conv_dim=(8, 8, 8), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)  # fmt: skip


def _tiny_family(model_type: str):
    """A tiny random ``AutoModelForCTC`` of ``model_type`` from its default config (the size keys
    it has set small; a composite config's encoder/audio sub-config likewise), and its extractor.
    """
    import transformers
    from transformers import AutoConfig, AutoModelForCTC
    from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING_NAMES

    config = AutoConfig.for_model(model_type)
    sub = next((getattr(config, k) for k in ("encoder_config", "audio_config") if hasattr(config, k)), None)  # fmt: skip
    if sub is None:
        config = AutoConfig.for_model(model_type, vocab_size=12, **{
            k: v for k, v in _TINY.items() if hasattr(config, k)})  # fmt: skip
    else:
        for key, value in _TINY.items():
            if hasattr(sub, key):
                setattr(sub, key, value)
        config.vocab_size = 12
    torch.manual_seed(0)
    model = AutoModelForCTC.from_config(config).eval()
    extractor = getattr(transformers, FEATURE_EXTRACTOR_MAPPING_NAMES[model_type])()
    if model.main_input_name not in extractor.model_input_names:
        # the auto table names wav2vec2's extractor for wav2vec2-bert, whose checkpoints ship
        # SeamlessM4T's (the input_features it reads)
        extractor = transformers.SeamlessM4TFeatureExtractor()
    return model, extractor


def _family_lengths(model, valid_units: torch.Tensor) -> list[int]:
    """The family's own output-length method (transformers' private one: the reference only)."""
    for name in ("_get_feat_extract_output_lengths", "_get_subsampling_output_length"):
        if hasattr(model, name):
            return getattr(model, name)(valid_units).tolist()
    raise AssertionError(f"{model.config.model_type}: no length method to compare with")


def _families() -> list[str]:
    pytest.importorskip("transformers")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

    return sorted(MODEL_FOR_CTC_MAPPING_NAMES)


@pytest.mark.parametrize("model_type", _families())
def test_every_transformers_ctc_family_gives_its_own_posteriors_and_lengths(model_type, one_thread):
    """Each family built tiny: our log-probs are the model's own ``log_softmax(logits)`` on the
    padded batch, lengths are the family's own, and the frame shift is measured, not looked up."""
    from asr_kd.models.hf import HFCTCModel

    model, extractor = _tiny_family(model_type)
    ours = HFCTCModel(model, extractor)
    audio, lens = _padded_audio()
    with torch.no_grad():
        log_probs, out_lens, _ = ours(audio, lens)
        inputs, mask = ours.features(audio, lens)
        ref = model(**inputs).logits.log_softmax(-1)
    waves = [audio[b, :n].numpy() for b, n in enumerate(lens.tolist())]
    default = extractor(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    assert all(torch.equal(inputs[k], default[k]) for k in default) and set(inputs) == set(default)
    assert log_probs.shape == ref.shape and (log_probs - ref).abs().max().item() <= 1e-5
    assert out_lens.tolist() == _family_lengths(model, mask.sum(-1))
    assert out_lens[0] == log_probs.shape[1]  # the longest utterance fills the batch
    assert ours.frame_shift_ms * 16 * log_probs.shape[1] == pytest.approx(AUDIO_LENS[0], rel=0.1)


def test_a_model_whose_lengths_follow_no_convolution_rule_is_refused_naming_it():
    """Frames growing as the square root of the samples: no fixed frame rate, refused at load."""
    from types import SimpleNamespace

    from asr_kd.errors import ConfigError
    from asr_kd.models.hf import measure_lengths

    class Oddity(torch.nn.Module):
        config = SimpleNamespace(model_type="oddity")

        def forward(self, input_values):
            return SimpleNamespace(logits=torch.zeros(1, int(input_values.shape[-1] ** 0.5), 3))

    def features(waves):
        x = torch.as_tensor(waves[0])[None]
        return {"input_values": x}, torch.ones_like(x)

    with pytest.raises(ConfigError, match="^a oddity model gives 126 then 238 frames"):
        measure_lengths(Oddity(), features)


def _linear_output_dtypes(model) -> list[torch.dtype]:
    """The output dtype of every Linear of the transformers model in the next forward."""
    seen: list[torch.dtype] = []
    for module in model.hf.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("family", ["wav2vec2_conformer", "parakeet"])
def test_half_weights_run_under_autocast_with_float32_posteriors(hf_model_dir, family):
    """dtype=bfloat16 (an online teacher under trainer.precision=bf16-mixed): the weights are
    bfloat16, the matmuls run in bfloat16, the log-probs come out float32 and near fp32's."""
    model_dir = hf_model_dir(family)
    half = load_hf(f"hf:{model_dir}", dtype=torch.bfloat16)
    assert {p.dtype for p in half.model.hf.parameters()} == {torch.bfloat16}
    assert half.model.frame_shift_ms == FRAME_SHIFT_MS[family]  # measured in bfloat16 too
    audio, lens = _padded_audio()
    seen = _linear_output_dtypes(half.model)
    with torch.no_grad():
        log_probs, out_lens, _ = half.model(audio, lens)
        full, full_lens, _ = load_hf(f"hf:{model_dir}").model(audio, lens)
    assert set(seen) == {torch.bfloat16} and log_probs.dtype == torch.float32
    assert torch.equal(out_lens, full_lens)
    valid = torch.arange(log_probs.shape[1])[None] < out_lens[:, None]
    assert (log_probs.exp() - full.exp()).abs()[valid].max().item() < 0.05


def test_float32_weights_run_under_the_callers_autocast(hf_model_dir):
    """The trainer's autocast (bf16-mixed) stays in force inside the model: it used to be
    switched off, so an fp32 teacher ran fp32 matmuls on every training step."""
    loaded = load_hf(f"hf:{hf_model_dir('hubert')}")
    audio, lens = _padded_audio()
    seen = _linear_output_dtypes(loaded.model)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        log_probs, _, _ = loaded.model(audio, lens)
    assert set(seen) == {torch.bfloat16} and log_probs.dtype == torch.float32
    seen.clear()
    with torch.no_grad():
        loaded.model(audio, lens)
    assert set(seen) == {torch.float32}  # no autocast of its own without a half dtype


@pytest.mark.parametrize("family", ["wav2vec2_conformer", "hubert", "parakeet"])
def test_extractor_inputs_are_the_extractors_own_and_survive_pickling(hf_model_dir, family):
    """ExtractorInputs, pickled as into a loader worker, gives the extractor's own padded
    inputs (and its mask of valid units) for a padded batch."""
    import pickle

    from transformers import AutoFeatureExtractor

    from asr_kd.models.hf import ExtractorInputs

    model_dir = hf_model_dir(family)
    loaded = load_hf(f"hf:{model_dir}")
    extract = pickle.loads(pickle.dumps(loaded.model.extract))
    audio, lens = _padded_audio()
    inputs, mask = extract(ExtractorInputs.waves(audio, lens))
    extractor = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
    waves = [audio[b, :n].numpy() for b, n in enumerate(lens.tolist())]
    ref = extractor(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    assert set(inputs) == set(ref) and all(torch.equal(inputs[k], ref[k]) for k in ref)
    assert mask.shape == next(iter(ref.values())).shape[:2] and mask.sum(-1).min() > 0
