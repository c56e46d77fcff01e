"""``asr-kd-train model=hf_parakeet_small``: a transformers ParakeetForCTC trained by our engine
(audio in, CTC), written with ``save_pretrained`` and read back as ``hf:<out_dir>/hf_model``."""

from __future__ import annotations

import shutil

import pytest
import torch

from asr_kd.checkpoint import file_sha256
from asr_kd.config import compose
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.metrics import char_error_rate, word_error_rate
from asr_kd.models.decode import greedy_ctc
from asr_kd.training.builders import build_model
from asr_kd.training.run import train

# a ~20 k-parameter Parakeet, a few seconds a step on 2 busy cores
TINY_HF = [
    "model=hf_parakeet_small",
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.ff_dim=64",
    "model.conv_kernel_size=5",
    "model.subsampling_channels=8",
    "data.num_workers=0",
    "data.num_buckets=2",
    "data.max_duration=10",
    "optim.warmup_steps=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "trainer.limit_val_batches=1",
]


def _cfg(data_dir, out_dir, steps: int, *overrides):
    return compose(
        "train",
        [
            f"data.dir={data_dir}",
            f"out_dir={out_dir}",
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}",
            f"checkpoint.every_n_steps={steps}",
            *TINY_HF,
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, prepared_data_dir):
    """4 steps, SpecAugment on the model's mel (train.yaml's default), averaging the last 2;
    and the model's weights before training."""
    from asr_kd.training import run

    out = tmp_path_factory.mktemp("train_hf")
    cfg = _cfg(prepared_data_dir, out, 4, "average.last_n=2", "average.every_n_steps=2")
    initial = {}

    def build_and_record(model_cfg, dm):
        model, model_config = build_model(model_cfg, dm)
        initial.update({k: v.clone() for k, v in model.state_dict().items()})
        return model, model_config

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "build_model", build_and_record)
        result = train(cfg)
    return out, result, initial


def _dev_audio(data_dir):
    from asr_kd.data.datamodule import AsrDataModule

    dm = AsrDataModule(data_dir, num_workers=0, num_buckets=2, max_duration=10, with_audio=True)
    return next(iter(dm.val_dataloader()))


def _trained_model(ckpt_path):
    """The HF model of an asr_kd checkpoint: rebuilt from its model config, its weights."""
    import hydra.utils

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = hydra.utils.instantiate(ckpt["asr_kd"]["model_config"]).eval()
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model


def test_the_run_writes_hf_dirs_that_load_with_the_trained_weights(hf_run, prepared_data_dir):
    """hf:<out>/hf_model (last.ckpt's weights) and hf_model_averaged (averaged.ckpt's) load with
    load_hf and give the log-probs of those weights; training moved every weight matrix."""
    from asr_kd.models.hf import load_hf

    out, result, initial = hf_run
    assert result["global_step"] == 4 and result["hf_model"] == str(out / "hf_model")
    assert result["hf_model_averaged"] == str(out / "hf_model_averaged")
    assert not list(out.glob("*.tmp"))
    batch = _dev_audio(prepared_data_dir)
    pairs = [("hf_model", "last.ckpt"), ("hf_model_averaged", "averaged.ckpt")]
    outputs = []
    for hf_dir, ckpt in pairs:
        loaded = load_hf(f"hf:{out / hf_dir}")
        with torch.inference_mode():
            got, got_lens, _ = loaded.model(batch["audio"], batch["audio_lens"])
            want, want_lens, _ = _trained_model(out / "checkpoints" / ckpt)(
                batch["audio"], batch["audio_lens"]
            )
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        assert torch.equal(got_lens, want_lens) and loaded.model.frame_shift_ms == 40.0
        outputs.append(got)
    assert not torch.allclose(outputs[0], outputs[1])  # averaged weights differ from the last
    # val/wer, val/cer: the last weights' greedy text on the dev batch (limit_val_batches=1;
    # got_lens: the same for both models)
    tokenizer = Tokenizer.load(prepared_data_dir / "lang")
    hyps = [tokenizer.decode(ids) for ids in greedy_ctc(outputs[0], got_lens)]
    for metric, rate in (("val/wer", word_error_rate), ("val/cer", char_error_rate)):
        want = rate(batch["texts"], hyps)[metric[4:]]
        assert result["metrics"][metric] == pytest.approx(want, rel=1e-6), metric
    # gradients reached every layer: no weight matrix is still at its initial value
    trained = _trained_model(out / "checkpoints" / "last.ckpt").state_dict()
    matrices = [name for name, value in initial.items() if value.dim() >= 2]
    assert len(matrices) > 10
    assert [n for n in matrices if torch.equal(initial[n], trained[n])] == []


def test_from_teacher_gives_back_the_training_tokenizers_ids(
    hf_run, prepared_data_dir, tiny_corpus_dir, tmp_path
):
    """asr-kd-prepare tokenizer=from_teacher tokenizer.teacher=hf:<out>/hf_model: the same ids as
    the tokenizer the model was trained with; the saved HF tokenizer encodes to them too."""
    from transformers import AutoProcessor

    from asr_kd.data import prepare
    from asr_kd.data.datamodule import load_cuts

    out, _, _ = hf_run
    source = f"hf:{out / 'hf_model'}"
    overrides = [f"corpus_dir={tiny_corpus_dir}", f"out_dir={tmp_path}", "subsets=[train]"]
    prepare.run(
        compose("prepare", [*overrides, "tokenizer=from_teacher", f"tokenizer.teacher={source}"])
    )
    trained, given = Tokenizer.load(prepared_data_dir / "lang"), Tokenizer.load(tmp_path / "lang")
    assert given.symbols == trained.symbols and given.teacher["ids"] == list(range(29))
    processor = AutoProcessor.from_pretrained(out / "hf_model", local_files_only=True)
    texts = [c.supervisions[0].text for c in load_cuts(prepared_data_dir, "train")]
    for text in [*texts, "IT'S A TEST"]:
        ids = trained.encode(text)
        assert given.encode(text) == ids
        assert processor.tokenizer.encode(text, add_special_tokens=False) == ids
        ctc = [i for t in ids for i in (t, t, 0)]  # CTC repeats and blanks
        assert processor.decode(ctc) == text


def test_resume_continues_the_hf_run_and_rewrites_hf_model(hf_run, tmp_path, prepared_data_dir):
    src, _, _ = hf_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    before = file_sha256(out / "hf_model" / "model.safetensors")
    result = train(_cfg(prepared_data_dir, out, 6, "resume=true"))
    assert result["resumed_from"].endswith("last.ckpt") and result["global_step"] == 6
    after = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert float(after["optimizer_states"][0]["state"][0]["step"]) == 6
    assert file_sha256(out / "hf_model" / "model.safetensors") != before  # step 6's weights
    from asr_kd.models.hf import load_hf

    batch = _dev_audio(prepared_data_dir)
    with torch.inference_mode():
        got = load_hf(f"hf:{out / 'hf_model'}").model(batch["audio"], batch["audio_lens"])[0]
        want = _trained_model(out / "checkpoints" / "last.ckpt")(
            batch["audio"], batch["audio_lens"]
        )
    torch.testing.assert_close(got, want[0], rtol=0, atol=1e-5)


def test_its_checkpoints_point_to_the_hf_dir(hf_run):
    """evaluate/transcribe/export read our Conformer from a .ckpt: an HF run's is refused with
    the directory to use."""
    from asr_kd.errors import ConfigError
    from asr_kd.models.loading import load_model

    out, _, _ = hf_run
    with pytest.raises(ConfigError, match=f"use hf:{out / 'hf_model'}"):
        load_model(out / "checkpoints" / "last.ckpt")


def test_spec_augment_masks_a_mel_models_features_and_is_refused_for_a_waveform_one(
    hf_model_dir, one_thread
):
    """Training: SpecAugment changes a trainable Parakeet's output (it masks the model's own mel;
    identity in eval mode); a waveform model (HuBERT) refuses it, naming spec_augment=null."""
    from asr_kd.data.augment import SpecAugment
    from asr_kd.errors import ConfigError
    from asr_kd.models.hf import load_hf
    from asr_kd.models.hf_build import build_parakeet_ctc

    torch.manual_seed(0)
    model = build_parakeet_ctc(29, hidden_size=32, num_layers=1, num_heads=2, ff_dim=64,
                               conv_kernel_size=5, subsampling_channels=8, dropout=0.0)  # fmt: skip
    audio, lens = torch.randn(2, 32000) * 0.1, torch.tensor([32000, 24000])
    augment = SpecAugment().train()
    model.train()
    plain = model(audio, lens)[0]
    masked, masked_lens, _ = model(audio, lens, augment=augment)
    assert torch.equal(masked_lens, model(audio, lens)[1]) and not torch.allclose(plain, masked)
    assert masked.requires_grad  # the training path keeps the graph
    torch.testing.assert_close(model(audio, lens, augment=augment.eval())[0], plain)
    hubert = load_hf(f"hf:{hf_model_dir('hubert')}").model
    with pytest.raises(ConfigError, match="spec_augment=null"):
        hubert(audio, lens, augment=augment.train())
