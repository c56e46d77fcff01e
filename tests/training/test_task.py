"""AsrTask's training step wiring: who sees which features, which knobs reach the loss.

A stub teacher (records the features it was given, returns fixed top-k targets) and a
SpecAugment spy (records its input, returns a fixed, recognisable masking) stand in for the
online teacher and the real augmentation; the loss of ``training_step`` is compared with a
direct :func:`asr_kd.distill.losses.distill_loss` call on the student's own forward pass.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.distill.losses import KDConfig, distill_loss
from asr_kd.training.task import AsrTask, OptimConfig
from tests.helpers.tiny_runs import toy_batch

# Every knob away from its default, so that one dropped on the way to the loss shows.
KNOBS = KDConfig(
    alpha=0.6, temperature=2.5, blank_weight=0.3, blank_threshold=0.4,
    shift=1, delay_window=2, renormalize=False,
)  # fmt: skip
TOP_K = 3  # teacher ids per frame (the targets' k; the loss takes whatever k it is given)
CHUNK, LEFT_CHUNKS = 2, 1  # the student's only training chunk size, and its left context


class StubTeacher:
    """``targets(batch)``: records the features it saw, returns fixed (ids, probs, lens)."""

    def __init__(self, ids, probs, lens):
        self.targets, self.seen = (ids, probs, lens), []

    def __call__(self, batch):
        self.seen.append(batch["feats"].clone())
        return self.targets


class SpecAugmentSpy(nn.Module):
    """Records ``(feats, feat_lens)`` and returns a copy with frames 3..5 set to 0."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, feats, feat_lens):
        self.calls.append((feats.clone(), feat_lens.clone()))
        out = feats.clone()
        out[:, 3:6] = 0.0
        return out


def _teacher_targets(frames: int, gen: torch.Generator, vocab: int = 11):
    """Top-k teacher targets at the temperature in which a third of the frames say blank with
    0.8 and another third with 0.45 (between ``KNOBS.blank_threshold`` and the default 0.5)."""
    probs = torch.softmax(2 * torch.randn(2, frames, vocab, generator=gen), -1)
    probs[..., 0] = 0.0
    probs = probs / probs.sum(-1, keepdim=True)
    blank = torch.zeros(vocab)
    blank[0] = 1.0
    probs[:, 0::3] = 0.2 * probs[:, 0::3] + 0.8 * blank
    probs[:, 1::3] = 0.55 * probs[:, 1::3] + 0.45 * blank
    top, ids = probs.topk(TOP_K, dim=-1)
    return ids, top


@pytest.fixture
def setup(tiny, one_thread):
    """(task, batch, stub teacher, spy, student) with a teacher of the student's frame count."""
    student = tiny(train_chunk_sizes=[CHUNK], default_left_chunks=LEFT_CHUNKS)
    gen = torch.Generator().manual_seed(3)
    batch = toy_batch(gen)
    feat_lens = batch["feat_lens"]
    teacher_lens = torch.div(feat_lens, student.subsampling_factor, rounding_mode="floor")
    ids, probs = _teacher_targets(int(teacher_lens.max()), gen)
    stub = StubTeacher(ids, probs, teacher_lens)
    spy = SpecAugmentSpy()
    task = AsrTask(
        student,
        {"_target_": "asr_kd.models.ConformerCTC"},
        Tokenizer.char(),
        role="student",
        optim=OptimConfig(),
        kd=KNOBS,
        targets=stub,
        spec_augment=spy,
    )
    task.log_dict = lambda *args, **kwargs: None  # no trainer attached: logging is not tested
    return task, batch, stub, spy, student


def _direct_loss(student, feats, batch, targets, **knobs):
    """The loss the configured knobs give, computed without AsrTask (``knobs`` override)."""
    with torch.no_grad():
        log_probs, out_lens = student(feats, batch["feat_lens"], CHUNK, LEFT_CHUNKS)
    options = {**KNOBS.loss_options(), **knobs}
    ids, probs, teacher_lens = targets
    return distill_loss(
        log_probs, out_lens, batch["tokens"], batch["token_lens"], ids, probs,
        teacher_lens=teacher_lens, **options,
    ).loss.item()  # fmt: skip


def test_teacher_sees_clean_features_and_student_the_spec_augmented_ones(setup):
    task, batch, stub, spy, student = setup
    clean = batch["feats"].clone()
    with torch.no_grad():
        loss = task.training_step(batch, 0).item()
    assert len(stub.seen) == 1 and torch.equal(stub.seen[0], clean)  # teacher: clean
    assert len(spy.calls) == 1
    seen_by_spy, lens_given = spy.calls[0]
    assert torch.equal(seen_by_spy, clean) and torch.equal(lens_given, batch["feat_lens"])
    augmented = spy(clean, batch["feat_lens"])
    # the student's loss is the one of the augmented features, not of the clean ones
    assert loss == pytest.approx(_direct_loss(student, augmented, batch, stub.targets), rel=1e-5)
    assert loss != pytest.approx(_direct_loss(student, clean, batch, stub.targets), rel=1e-3)


@pytest.mark.parametrize(
    "knob",
    ["alpha", "temperature", "blank_weight", "blank_threshold", "shift", "delay_window",
     "renormalize"],
)  # fmt: skip
def test_every_configured_knob_reaches_the_loss(setup, knob):
    """The training loss equals distill_loss with all the configured knobs, and not the one
    with ``knob`` at its default (so a knob dropped on the way would fail here)."""
    task, batch, stub, spy, student = setup
    with torch.no_grad():
        loss = task.training_step(batch, 0).item()
    augmented = spy.calls[0][0].clone()
    augmented[:, 3:6] = 0.0
    assert loss == pytest.approx(_direct_loss(student, augmented, batch, stub.targets), rel=1e-5)
    default = getattr(KDConfig(), knob)
    if knob == "alpha":  # alpha 0 is plain CTC: compare with another mix instead
        default = 0.5
    other = _direct_loss(student, augmented, batch, stub.targets, **{knob: default})
    assert loss != pytest.approx(other, rel=1e-4), f"{knob} makes no difference here"


def test_a_teacher_with_another_frame_count_is_refused(setup):
    task, batch, stub, _, _ = setup
    ids, probs, lens = stub.targets
    stub.targets = (ids, probs, lens - torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"cut cut-b: teacher has 7 frames, student 8"):
        task.training_step(batch, 0)


class ScriptedModel(nn.Module):
    """Stands in for the model at validation: returns the next queued (log_probs, out_lens)."""

    streaming, default_left_chunks = False, -1

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)

    def forward(self, feats, feat_lens, chunk_size=None, left_chunks=-1):
        return self.outputs.pop(0)


def _emitting(tokenizer: Tokenizer, texts: list[str], frames: int = 40):
    """(log_probs, out_lens) whose greedy CTC decoding is ``texts``: each token then a blank."""
    log_probs = torch.full((len(texts), frames, tokenizer.vocab_size), -30.0)
    log_probs[..., tokenizer.blank_id] = 0.0
    for b, text in enumerate(texts):
        for i, token in enumerate(tokenizer.encode(text) if text else []):
            log_probs[b, 2 * i] = -30.0
            log_probs[b, 2 * i, token] = 0.0
    return log_probs, torch.full((len(texts),), frames)


def _val_batch(tokenizer: Tokenizer, refs: list[str]) -> dict:
    ids = [tokenizer.encode(r) if r else [] for r in refs]
    tokens = torch.zeros(len(refs), max(1, *map(len, ids)), dtype=torch.int64)
    for b, seq in enumerate(ids):
        tokens[b, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
    return {
        "feats": torch.zeros(len(refs), 160, 80),
        "feat_lens": torch.full((len(refs),), 160),
        "tokens": tokens,
        "token_lens": torch.tensor([len(s) for s in ids]),
        "cut_ids": [f"cut-{i}" for i in range(len(refs))],
        "texts": refs,
    }


def test_dev_wer_is_corpus_level_over_the_batches_and_restarts_each_validation():
    """val/wer = (sub + del + ins) / reference words over every batch of one validation; cuts
    without a transcript are left out; the next validation starts from zero."""
    import types

    from asr_kd.metrics import char_error_rate

    tok = Tokenizer.char()
    epochs = [  # per validation: batches of (references, hypotheses)
        [
            (["THE CAT SAT", "A B"], ["THE BAT SAT DOWN", "A"]),  # 1 sub 1 ins / 3, 1 del / 2
            (["", "ON THE MAT"], ["NOISE", "ON THE MAT"]),  # no transcript: not scored
        ],
        [(["A B C D"], ["A X C D"])],  # 1 sub / 4
    ]
    outputs = [_emitting(tok, hyps) for epoch in epochs for _, hyps in epoch]
    task = AsrTask(ScriptedModel(outputs), {}, tok, role="teacher", optim=OptimConfig())
    logged = []
    task.log = lambda name, value, **kwargs: logged.append((name, float(value)))
    task.trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(reduce=lambda x, **_: x))
    figures = []
    for epoch in epochs:
        logged.clear()
        for i, (refs, _) in enumerate(epoch):
            task.validation_step(_val_batch(tok, refs), i)
        task.on_validation_epoch_end()
        figures.append({name: value for name, value in logged if name in ("val/wer", "val/cer")})
    refs = ["THE CAT SAT", "A B", "ON THE MAT"]
    hyps = ["THE BAT SAT DOWN", "A", "ON THE MAT"]
    assert figures[0]["val/wer"] == pytest.approx(100 * 3 / 8)  # not the mean per batch
    assert figures[0]["val/cer"] == pytest.approx(char_error_rate(refs, hyps)["cer"])
    assert figures[1]["val/wer"] == pytest.approx(25.0)
    assert figures[1]["val/cer"] == pytest.approx(char_error_rate(["A B C D"], ["A X C D"])["cer"])


def test_several_dev_subsets_log_each_wer_and_the_combined_one_that_best_ckpt_follows():
    """With val_subsets [dev-clean, dev-other] (one dataloader each): val/<subset>/wer per subset
    and val/wer over the words of both together (not the mean of the two rates)."""
    import types

    tok = Tokenizer.char()
    loaders = [  # per dev subset: (references, hypotheses) of its one batch
        (["THE CAT SAT", "A B"], ["THE BAT SAT", "A B"]),  # 1 error / 5 words
        (["A B C"], ["X Y C"]),  # 2 errors / 3 words
    ]
    outputs = [_emitting(tok, hyps) for _, hyps in loaders]
    task = AsrTask(
        ScriptedModel(outputs), {}, tok, role="student", optim=OptimConfig(),
        val_subsets=["dev-clean", "dev-other"],
    )  # fmt: skip
    logged = {}
    task.log = lambda name, value, **kwargs: logged.update({name: float(value)})
    task.trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(reduce=lambda x, **_: x))
    for idx, (refs, _) in enumerate(loaders):
        task.validation_step(_val_batch(tok, refs), 0, dataloader_idx=idx)
    task.on_validation_epoch_end()
    assert logged["val/dev-clean/wer"] == pytest.approx(20.0)
    assert logged["val/dev-other/wer"] == pytest.approx(100 * 2 / 3)
    assert logged["val/wer"] == pytest.approx(100 * 3 / 8)
    assert {"val/dev-clean/loss", "val/dev-other/loss", "val/cer"} <= set(logged)
    assert "val/loss" not in logged and not task._val_counts.any()  # restarts next time
