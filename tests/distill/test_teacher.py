"""The teacher registry and interface (asr_kd/distill/teacher.py): one implementation per source
string, each giving its fingerprint, targets, frame shift, vocabulary check and input kind."""

from __future__ import annotations

import pytest
import torch

from asr_kd.checkpoint import file_sha256
from asr_kd.data.datamodule import AsrDataModule
from asr_kd.distill.hf_teacher import TransformersTeacher
from asr_kd.distill.store import teacher_fingerprint
from asr_kd.distill.teacher import (
    TEACHER_SOURCES,
    CheckpointTeacher,
    open_teacher,
    teacher_class,
)
from asr_kd.errors import ConfigError
from asr_kd.models.hf import weights_sha256
from asr_kd.models.loading import MODEL_SOURCES, load_model, source_sha256


def test_every_model_source_has_a_teacher_and_the_longest_prefix_wins():
    assert set(TEACHER_SOURCES) == set(MODEL_SOURCES)
    assert teacher_class("hf:org/model@main") is TransformersTeacher
    assert teacher_class("exp/hf:odd/last.ckpt") is CheckpointTeacher  # a prefix, not a substring


def test_a_checkpoint_teacher(tmp_path, make_checkpoint, prepared_data_dir):
    ckpt = make_checkpoint(tmp_path / "teacher.ckpt", False)
    teacher = open_teacher(str(ckpt))
    assert isinstance(teacher, CheckpointTeacher) and not teacher.needs_audio
    assert (teacher.frame_shift_ms, teacher.num_layers, teacher.hidden_size) == (40.0, 2, 48)
    assert teacher.fingerprint(4, 2.0, 40.0, (1,)) == teacher_fingerprint(
        file_sha256(ckpt), teacher.tokenizer.fingerprint, 40.0, 4, 2.0, (1,), "none"
    )
    assert source_sha256(ckpt) == file_sha256(ckpt)
    assert teacher.targets_shift_ms(80.0) == 40.0  # its own rate: no conversion
    with pytest.raises(ConfigError, match=r"teacher frame shift 40 ms .* != student frame shift"):
        teacher.check_frame_rate(80.0)
    dm = AsrDataModule(prepared_data_dir, num_workers=0)
    teacher.check_vocab(dm.tokenizer, "DATA/lang")  # the same tokenizer: no error
    batch = next(iter(dm.dataloader("dev")))
    targets = teacher.targets(1.0, None, (2,))
    ids, probs, lens, hidden = targets(batch)
    log_probs, want_lens, layers = load_model(ckpt).model(
        batch["feats"], batch["feat_lens"], return_hidden=True
    )
    assert torch.equal(lens, want_lens) and targets.hidden_dims == (48,)
    torch.testing.assert_close(probs, log_probs.exp())
    torch.testing.assert_close(hidden[0], layers[1])
    assert len(targets.greedy()) == len(batch["cut_ids"])


def test_a_checkpoint_teacher_in_bf16_keeps_float32_posteriors_close_to_float32(
    tmp_path, make_checkpoint, prepared_data_dir
):
    # The bug it pins: bf16=true was refused for an asr_kd teacher, so its dump ran in float32
    # on a GPU. Under autocast the posteriors are softened in float32 (the bf16 log-probs
    # cast up), and differ from float32 by bf16's rounding only.
    ckpt = make_checkpoint(tmp_path / "teacher.ckpt", False)
    batch = next(iter(AsrDataModule(prepared_data_dir, num_workers=0).dataloader("dev")))
    full = open_teacher(str(ckpt)).targets(1.0, None, (2,))(batch)
    half_teacher = open_teacher(str(ckpt), bf16=True)
    half = half_teacher.targets(1.0, None, (2,))(batch)
    assert half_teacher.bf16 and half.probs.dtype == torch.float32
    assert torch.equal(half.lens, full.lens)
    valid = torch.arange(full.probs.shape[1])[None] < full.lens[:, None]
    assert (half.ids[..., 0] == full.ids[..., 0])[valid].float().mean() > 0.9
    assert not torch.equal(half.probs, full.probs)  # it did run in bf16
    torch.testing.assert_close(half.probs, full.probs, atol=0.05, rtol=0)


def test_a_transformers_teacher(hf_model_dir):
    model_dir = hf_model_dir("parakeet")
    teacher = open_teacher(f"hf:{model_dir}")
    assert isinstance(teacher, TransformersTeacher) and teacher.needs_audio
    assert teacher.frame_shift_ms == 80.0 and teacher.targets_shift_ms(40.0) == 40.0
    fingerprint = teacher.fingerprint(4, 2.0, 40.0)
    assert fingerprint["checkpoint_sha256"] == weights_sha256(model_dir)
    assert source_sha256(f"hf:{model_dir}") == weights_sha256(model_dir)
    assert fingerprint["frame_conversion"] == "repeat2"
    teacher.check_frame_rate(40.0)
    with pytest.raises(ConfigError, match="teacher frame shift 80 ms vs student frame shift 30"):
        teacher.check_frame_rate(30.0)
    wav2vec2 = open_teacher(f"hf:{hf_model_dir('hubert')}").tokenizer
    with pytest.raises(ConfigError, match="does not match the student's .*from_teacher"):
        teacher.check_vocab(wav2vec2, "DATA/lang")
    assert teacher.targets(2.0, 4, (1,), 40.0).hidden_dims == (teacher.hidden_size,)
