"""distill=inter_ctc: auxiliary CTC heads on student layers, training only.

Losses on hand-made tensors, the layer check, the heads' place in the task (optimised, in the
Lightning checkpoint, out of load_model and the export), and a few-step run with resume.
"""

from __future__ import annotations

import onnx
import pytest
import torch

from asr_kd.checkpoint import load_checkpoint
from asr_kd.config import compose
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.distill.inter_ctc import InterCTCHeads, inter_ctc_loss, resolve_inter_layers
from asr_kd.distill.losses import KDConfig, distill_loss, soften_teacher
from asr_kd.distill.store import SoftTargetStore
from asr_kd.distill.teachers import CachedTargets, TeacherSetup
from asr_kd.distill.terms import build_kd_terms
from asr_kd.errors import ConfigError
from asr_kd.export.onnx import run as export
from asr_kd.models.loading import load_model
from asr_kd.training.run import distill
from asr_kd.training.task import AsrTask, OptimConfig
from tests.helpers.tiny_runs import kd_student_run, toy_batch


def test_default_layer_is_the_middle_one_and_out_of_range_is_a_config_error():
    assert resolve_inter_layers(None, 3) == [2]
    assert resolve_inter_layers(None, 12) == [6]
    assert resolve_inter_layers([1, 3], 4) == [1, 3]
    for layers, num_layers in (([0], 3), ([3], 3), ([1, 1], 3), ([], 3), (None, 1)):
        with pytest.raises(ConfigError, match=r"distill.inter_layers=.*expected distinct"):
            resolve_inter_layers(layers, num_layers)


def test_head_loss_is_the_mean_of_each_heads_ctc_and_kd_mix():
    gen = torch.Generator().manual_seed(0)
    heads = [torch.log_softmax(3 * torch.randn(2, 9, 6, generator=gen), -1) for _ in range(2)]
    teacher = torch.log_softmax(3 * torch.randn(2, 9, 6, generator=gen), -1)
    ids, probs = soften_teacher(teacher, 2.0, k=3)
    lens, tokens, token_lens = (
        torch.tensor([9, 7]),
        torch.tensor([[1, 2], [3, 0]]),
        torch.tensor([2, 1]),
    )
    options = dict(alpha=0.5, temperature=2.0, shift=1)
    got = inter_ctc_loss(heads, lens, tokens, token_lens, ids, probs, **options)
    each = [distill_loss(h, lens, tokens, token_lens, ids, probs, **options).loss for h in heads]
    assert got.item() == pytest.approx((each[0] + each[1]).item() / 2, rel=1e-6)
    assert each[0].item() != pytest.approx(each[1].item(), rel=1e-3)  # the mean is not trivial
    ctc_only = inter_ctc_loss(heads[:1], lens, tokens, token_lens)  # no teacher: Inter-CTC
    assert ctc_only.item() == pytest.approx(
        distill_loss(heads[0], lens, tokens, token_lens).ctc.item()
    )


def test_heads_read_the_chosen_layer():
    heads = InterCTCHeads([1, 3], d_model=4, vocab_size=5, weight=0.3)
    hidden = tuple(torch.full((1, 2, 4), float(i)) for i in range(4))
    out = heads(hidden)
    for layer, head, log_probs in zip((1, 3), heads.heads, out, strict=True):
        assert torch.allclose(log_probs, head(hidden[layer - 1]).log_softmax(-1))
    assert not torch.allclose(out[0], out[1])


@pytest.fixture
def task_and_batch(tiny, one_thread):
    """A 2-layer student task with a head on layer 1 (weight 0.4) and a stub top-3 teacher."""
    student = tiny(train_chunk_sizes=[None])
    gen = torch.Generator().manual_seed(3)
    batch = toy_batch(gen)
    feat_lens = batch["feat_lens"]
    lens = torch.div(feat_lens, student.subsampling_factor, rounding_mode="floor")
    teacher = torch.log_softmax(2 * torch.randn(2, int(lens.max()), 11, generator=gen), -1)
    ids, probs = soften_teacher(teacher, 2.0, k=3)
    kd = KDConfig(alpha=0.5, temperature=2.0, inter_layers=[1], inter_weight=0.4)
    targets = lambda batch: (ids, probs, lens)  # noqa: E731
    task = AsrTask(
        student, {"_target_": "asr_kd.models.ConformerCTC"}, Tokenizer.char(), role="student",
        optim=OptimConfig(), kd=kd, targets=targets,
        kd_modules=build_kd_terms(kd, student, TeacherSetup(targets)),
    )  # fmt: skip
    task.log_dict = lambda *args, **kwargs: None  # no trainer attached
    return task, batch, (ids, probs, lens)


def test_training_loss_mixes_the_final_layer_and_the_heads(task_and_batch):
    task, batch, (ids, probs, lens) = task_and_batch
    student, heads = task.model, task.kd_modules["inter_ctc"]
    loss = task.training_step(batch, 0)
    with torch.no_grad():
        log_probs, out_lens, hidden = student(
            batch["feats"], batch["feat_lens"], return_hidden=True
        )
    args = (out_lens, batch["tokens"], batch["token_lens"], ids, probs)
    options = dict(alpha=0.5, temperature=2.0, teacher_lens=lens)
    final = distill_loss(log_probs, *args, **options).loss
    aux = inter_ctc_loss(heads(hidden), *args, **options)
    assert loss.item() == pytest.approx((0.6 * final + 0.4 * aux).item(), rel=1e-5)
    loss.backward()
    assert heads.heads[0].weight.grad.abs().sum() > 0  # the head is trained ...
    optimised = {id(p) for group in task.configure_optimizers()["optimizer"].param_groups
                 for p in group["params"]}  # fmt: skip
    assert {id(p) for p in heads.parameters()} <= optimised  # ... and optimised
    assert not any(k.startswith("kd_modules") for k in task.model.state_dict())


def _run(tiny_config, data_dir, out_dir, teacher_ckpt, targets_dir, *overrides, steps=3):
    return distill(
        kd_student_run(
            data_dir,
            out_dir,
            teacher_ckpt,
            targets_dir,
            "model.num_layers=2",
            "distill.k=4",
            *overrides,
            steps=steps,
        )  # fmt: skip
    )


def test_out_of_range_layer_is_refused_before_training(
    tmp_path, tiny_config, prepared_data_dir, teacher_ckpt, targets_dir
):
    with pytest.raises(ConfigError, match=r"inter_layers=\[2\].*1 \.\. 1"):
        _run(tiny_config, prepared_data_dir, tmp_path, teacher_ckpt, targets_dir,
             "distill=inter_ctc", "distill.inter_layers=[2]")  # fmt: skip
    assert not (tmp_path / "checkpoints").exists()


def _graph(path) -> tuple:
    graph = onnx.load(str(path)).graph
    return (
        [node.op_type for node in graph.node],
        [(i.name, str(i.type)) for i in graph.input],
        [(o.name, str(o.type)) for o in graph.output],
        sorted(tuple(init.dims) for init in graph.initializer),
    )


def _losses_by_hand(step, ckpt, targets_dir) -> tuple[float, float]:
    """The final layer's loss and the layer-1 head's of distill=inter_ctc (alpha 0.5, T 2, top-4
    targets, teacher residual in an "other" bucket), from the recorded weights and batch."""
    student = load_model(ckpt).model
    student.load_state_dict(step.model)
    batch = step.batch
    ids, probs, lens, _ = CachedTargets(SoftTargetStore(targets_dir), k=4)(batch)
    args = (batch["tokens"], batch["token_lens"], ids, probs)
    options = dict(alpha=0.5, temperature=2.0, renormalize=False, teacher_lens=lens)
    head = {k.removeprefix("inter_ctc.heads.0."): v for k, v in step.kd_modules.items()}
    with torch.no_grad():
        log_probs, out_lens, hidden = student.train()(
            batch["feats"], batch["feat_lens"], return_hidden=True
        )
        head_log_probs = (hidden[0] @ head["weight"].T + head["bias"]).log_softmax(-1)
        final = distill_loss(log_probs, out_lens, *args, **options).loss
        heads = distill_loss(head_log_probs, out_lens, *args, **options).loss
    return float(final), float(heads)


def test_heads_are_checkpointed_for_resume_and_dropped_by_load_model_and_export(
    tmp_path, tiny_config, prepared_data_dir, teacher_ckpt, targets_dir, last_step
):
    runs = {}
    for name, setting in (("inter", "inter_ctc"), ("plain", "frame_kl")):
        result = _run(tiny_config, prepared_data_dir, tmp_path / name, teacher_ckpt,
                      targets_dir, f"distill={setting}", "distill.source=cached",
                      *last_step.overrides)  # fmt: skip
        assert result["global_step"] == 3 and result["bad_batches"] == 0
        runs[name] = tmp_path / name / "checkpoints" / "last.ckpt"
    assert result["metrics"].get("train/inter_ctc") is None  # frame_kl: no heads
    state = load_checkpoint(runs["inter"])["state_dict"]
    heads = {k for k in state if k.startswith("kd_modules.inter_ctc.")}
    assert heads == {"kd_modules.inter_ctc.heads.0.weight", "kd_modules.inter_ctc.heads.0.bias"}
    assert state["kd_modules.inter_ctc.heads.0.weight"].shape == (29, 32)  # Linear(D -> V)
    loaded = load_model(runs["inter"])
    assert set(loaded.model.state_dict()) == set(load_model(runs["plain"]).model.state_dict())
    graphs = {}
    for name, ckpt in runs.items():
        out = tmp_path / f"onnx_{name}"
        export(compose("export", [f"ckpt={ckpt}", f"out_dir={out}", "chunk_sizes_ms=[160]"]))
        graphs[name] = {f.name: _graph(f) for f in sorted(out.glob("*.onnx"))}
    assert len(graphs["inter"]) == 2  # full.onnx and the 160 ms step graph
    assert graphs["inter"] == graphs["plain"]  # the same nodes, inputs, outputs and weights
    # resume: the heads' weights and optimizer state come back (strict load, same keys)
    resumed = _run(tiny_config, prepared_data_dir, tmp_path / "inter", teacher_ckpt, targets_dir,
                   "distill=inter_ctc", "resume=true", "trainer.max_steps=5",
                   *last_step.overrides, steps=5)  # fmt: skip
    assert resumed["global_step"] == 5 and resumed["resumed_from"].endswith("last.ckpt")
    final, heads = _losses_by_hand(last_step, runs["inter"], targets_dir)
    figures = resumed["metrics"]  # of the last step, with the resumed heads
    assert figures["train/inter_ctc"] == pytest.approx(heads, rel=1e-5)
    assert figures["train/loss"] == pytest.approx(0.7 * final + 0.3 * heads, rel=1e-5)
    after = load_checkpoint(runs["inter"])["state_dict"]["kd_modules.inter_ctc.heads.0.weight"]
    assert not torch.equal(after, state["kd_modules.inter_ctc.heads.0.weight"])
