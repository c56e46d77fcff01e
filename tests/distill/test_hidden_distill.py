"""distill=hidden end to end: teacher layers in the store (round trip, codecs, fingerprint,
resume), online == cached, a few training steps and their resume, and projections that never
reach load_model or an exported graph."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
import torch

from asr_kd.checkpoint import atomic_torch_save, load_checkpoint
from asr_kd.config import compose
from asr_kd.data.datamodule import build_datamodule
from asr_kd.distill.dump import dump_targets
from asr_kd.distill.store import SoftTargetStore
from asr_kd.distill.teachers import CachedTargets, OnlineTeacher
from asr_kd.errors import ConfigError
from asr_kd.export.onnx import export_checkpoint
from asr_kd.models.loading import load_model
from asr_kd.training.run import distill

_HIDDEN = ("hidden_layers=[1]",)  # the tiny teacher has one layer
_MADE: dict[str, tuple] = {}  # compress -> (out_dir, summary): each dump made once per session


@pytest.fixture
def hidden_dirs(tmp_path_factory, prepared_data_dir, teacher_ckpt, dump_targets_config):
    """``compress -> (out_dir, summary)`` of the dump with teacher layer 1 under that codec."""

    def get(compress: str):
        if compress not in _MADE:
            out = tmp_path_factory.mktemp(f"hidden_{compress}")
            cfg = dump_targets_config(
                prepared_data_dir, teacher_ckpt, out, *_HIDDEN, f"hidden_compress={compress}"
            )
            _MADE[compress] = (out, dump_targets(cfg))
        return _MADE[compress]

    return get


def _first_batch(data_dir):
    dm = build_datamodule(compose("dump_targets", [f"data.dir={data_dir}"]).data)
    return next(iter(dm.dataloader("train", shuffle=False, max_duration=200.0)))


def _online_and_cached(data_dir, teacher_ckpt, out_dir):
    batch = _first_batch(data_dir)
    teacher = load_model(teacher_ckpt)
    online = OnlineTeacher(teacher.model, temperature=2.0, k=4, hidden_layers=[1, 1])(batch)
    cached = CachedTargets(SoftTargetStore(out_dir), hidden_layers=[1, 1])(batch)
    return online, cached


def _valid(x, lens):
    return torch.cat([x[b, :n] for b, n in enumerate(lens.tolist())])


def test_online_and_cached_hidden_targets_agree_on_the_same_batch(
    hidden_dirs, prepared_data_dir, teacher_ckpt
):
    out, summary = hidden_dirs("none")
    online, cached = _online_and_cached(prepared_data_dir, teacher_ckpt, out)
    assert torch.equal(online.lens, cached.lens)
    # the posteriors are unchanged by the layers
    assert torch.equal(_valid(online.ids, online.lens), _valid(cached.ids, cached.lens))
    assert len(online.hidden) == len(cached.hidden) == 2
    for h_online, h_cached in zip(online.hidden, cached.hidden, strict=True):
        a, b = _valid(h_online, online.lens), _valid(h_cached, cached.lens)
        assert a.shape == b.shape and a.shape[1] == 32
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)  # fp16 on disk
    assert summary["hidden"]["raw_bytes_per_frame"] == summary["hidden"]["bytes_per_frame"] == 64
    assert summary["bytes_per_frame"] == 16  # top-4 posteriors: k * 4


@pytest.mark.parametrize("compress, stored_bytes", [("int8", 32), ("pca8", 16)])
def test_compressed_layers_decode_within_their_bound(
    compress, stored_bytes, hidden_dirs, prepared_data_dir, teacher_ckpt
):
    out, summary = hidden_dirs(compress)
    assert summary["hidden"]["bytes_per_frame"] == stored_bytes
    online, cached = _online_and_cached(prepared_data_dir, teacher_ckpt, out)
    a, b = _valid(online.hidden[0], online.lens), _valid(cached.hidden[0], cached.lens)
    error = (a - b).abs()
    if compress == "int8":  # half a quantisation step per channel (+ float rounding)
        scale = torch.from_numpy(SoftTargetStore(out)._codec(1)[1].numpy())
        assert torch.all(error <= scale / 2 * 1.001 + 1e-5)
    else:  # 8 of 32 directions: the residual, but far better than the mean alone
        mean_only = (a - a.mean(0)).pow(2).mean()
        assert 0 < error.pow(2).mean() < 0.5 * mean_only
    verified = SoftTargetStore(out).verify()
    assert verified["verified"]


def test_a_resumed_dump_keeps_its_codec_and_redoes_a_lost_shard(
    tmp_path, hidden_dirs, prepared_data_dir, teacher_ckpt, dump_targets_config
):
    src, _ = hidden_dirs("pca8")
    out = tmp_path / "t"
    shutil.copytree(src, out)
    codec = (out / "hidden_codec1.pca8.npy").read_bytes()
    (out / "shard_00001.hidden1.npy").write_bytes(b"x")  # damaged
    # another fit size: a codec fitted again would differ from the one the shards were coded with
    cfg = dump_targets_config(
        prepared_data_dir, teacher_ckpt, out, *_HIDDEN, "hidden_compress=pca8",
        "hidden_fit_frames=40",
    )  # fmt: skip
    summary = dump_targets(cfg)
    assert summary["removed_shards"] == ["shard_00001"] and summary["resumed_cuts"] > 0
    assert (out / "hidden_codec1.pca8.npy").read_bytes() == codec  # not fitted again
    cuts = list(json.loads((src / "index.json").read_text())["cuts"])
    (a,), (b,) = SoftTargetStore(src).hidden(cuts, [1]), SoftTargetStore(out).hidden(cuts, [1])
    assert torch.equal(a, b)


def test_another_codec_or_layer_set_is_another_fingerprint(
    tmp_path, hidden_dirs, prepared_data_dir, teacher_ckpt, dump_targets_config
):
    src, _ = hidden_dirs("none")
    out = tmp_path / "t"
    shutil.copytree(src, out)
    with pytest.raises(ConfigError, match=r"hidden_compress: 'none' \(targets\) != 'int8'"):
        dump_targets(
            dump_targets_config(
                prepared_data_dir, teacher_ckpt, out, *_HIDDEN, "hidden_compress=int8"
            )
        )
    with pytest.raises(ConfigError, match=r"hidden_layers: \[1\] \(targets\) != None"):
        dump_targets(dump_targets_config(prepared_data_dir, teacher_ckpt, out))


def _hidden_run(tiny_config, data_dir, out_dir, teacher_ckpt, targets_dir, *overrides, steps=3):
    return tiny_config(
        "distill", data_dir, out_dir, f"teacher_ckpt={teacher_ckpt}",
        f"targets_dir={targets_dir}", "model=student_tiny", "distill=hidden", *overrides,
        steps=steps,
    )  # fmt: skip


def test_cached_hidden_needs_a_store_with_the_layers(
    tmp_path, tiny_config, prepared_data_dir, teacher_ckpt, targets_dir
):
    cfg = _hidden_run(tiny_config, prepared_data_dir, tmp_path, teacher_ckpt, targets_dir)
    with pytest.raises(
        ConfigError,
        match=r"^hidden-state distillation needs teacher layers \[1\] but the targets in \S+ "
        r"hold no hidden layers \(missing \[1\]\); dump them with asr-kd-dump-targets \.\.\. "
        r"hidden_layers=\[1\] into a new out_dir",
    ):
        distill(cfg)


def _hidden_loss_by_hand(step, ckpt, teacher) -> float:
    """DistilHuBERT's L1 - log sigmoid(cos) of the projected student layer 1 against the
    LayerNorm'd teacher layer 1, over valid frames, from the recorded weights and batch."""
    student = load_model(ckpt).model
    student.load_state_dict(step.model)
    batch = step.batch
    with torch.no_grad():
        _, lens, hidden = student.train()(batch["feats"], batch["feat_lens"], return_hidden=True)
        projection = {k.removeprefix("hidden.proj.0."): v for k, v in step.kd_modules.items()}
        s = _valid(hidden[0] @ projection["weight"].T + projection["bias"], lens)
        t = _valid(teacher(batch).hidden[0], lens)
        t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(
            t.var(-1, unbiased=False, keepdim=True) + 1e-5
        )
        cos = (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))
        return float(((s - t).abs().mean(-1) - torch.log(torch.sigmoid(cos))).mean())


@pytest.mark.parametrize("source", ["cached", "online"])
def test_a_few_steps_of_distill_hidden_then_resume(
    source, tmp_path, tiny_config, hidden_dirs, prepared_data_dir, teacher_ckpt, last_step
):
    out_dir, _ = hidden_dirs("none")
    args = (tiny_config, prepared_data_dir, tmp_path, teacher_ckpt, out_dir)
    result = distill(_hidden_run(*args, f"distill.source={source}", *last_step.overrides))
    assert result["global_step"] == 3 and result["bad_batches"] == 0
    figures = result["metrics"]  # of the last step
    teacher = (
        CachedTargets(SoftTargetStore(out_dir), hidden_layers=[1])
        if source == "cached"
        else OnlineTeacher(load_model(teacher_ckpt).model, temperature=2.0, hidden_layers=[1])
    )
    by_hand = _hidden_loss_by_hand(last_step, tmp_path / "checkpoints" / "last.ckpt", teacher)
    assert figures["train/hidden"] == pytest.approx(by_hand, rel=1e-5)
    # distill=hidden: alpha 0 (no frame KL), hidden_weight 3
    assert figures["train/kd"] == 0
    assert figures["train/loss"] == pytest.approx(figures["train/ctc"] + 3 * by_hand, rel=1e-5)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    proj = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("kd_modules.hidden.")}
    assert set(proj) == {"kd_modules.hidden.proj.0.weight", "kd_modules.hidden.proj.0.bias"}
    assert proj["kd_modules.hidden.proj.0.weight"].shape == (32, 32)
    optimizer = ckpt["optimizer_states"][0]
    model_params = len(list(load_model(tmp_path / "checkpoints" / "last.ckpt").model.parameters()))
    assert len(optimizer["param_groups"][0]["params"]) == model_params + 2  # + the projection
    assert optimizer["state"][model_params]["exp_avg"].shape == (32, 32)  # and it is trained
    resumed = distill(
        _hidden_run(*args, f"distill.source={source}", *last_step.overrides, "resume=true", steps=5)
    )
    assert resumed["global_step"] == 5 and resumed["resumed_from"]
    after = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert not torch.equal(after["kd_modules.hidden.proj.0.weight"], proj[
        "kd_modules.hidden.proj.0.weight"])  # fmt: skip


def _graph_summary(path):
    graph = onnx.load(str(path)).graph
    return [n.op_type for n in graph.node], [o.name for o in graph.output]


def test_a_student_trained_with_projections_exports_and_loads_like_a_plain_one(
    tmp_path, tiny_config, hidden_dirs, prepared_data_dir, teacher_ckpt
):
    out_dir, _ = hidden_dirs("none")
    run_dir = tmp_path / "run"
    distill(_hidden_run(tiny_config, prepared_data_dir, run_dir, teacher_ckpt, out_dir))
    trained = run_dir / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(trained)
    assert any(k.startswith("kd_modules.") for k in ckpt["state_dict"])
    loaded = load_model(trained)  # strict: only model.* keys
    assert not any(
        "kd_modules" in k or "proj" in k.split(".")[0] for k in loaded.model.state_dict()
    )
    plain = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    plain_ckpt = tmp_path / "plain.ckpt"
    atomic_torch_save({"state_dict": plain, "asr_kd": ckpt["asr_kd"]}, plain_ckpt)
    got = export_checkpoint(load_model(trained), tmp_path / "onnx_kd", [4], left_chunks=2)
    want = export_checkpoint(load_model(plain_ckpt), tmp_path / "onnx_plain", [4], left_chunks=2)
    assert set(got) == set(want) and len(got) == 2
    for name in got:
        assert _graph_summary(got[name]) == _graph_summary(want[name])


def _layer_outputs(model, batch, index: int) -> torch.Tensor:
    """(B, T', D) output of ``model.layers[index]`` on ``batch``, caught by a forward hook (not
    the ``return_hidden`` path the dump and the online teacher read)."""
    caught = []
    hook = model.layers[index].register_forward_hook(lambda _m, _i, out: caught.append(out))
    try:
        with torch.no_grad():
            model(batch["feats"], batch["feat_lens"])
    finally:
        hook.remove()
    out = caught[0]
    return out[0] if isinstance(out, tuple) else out


def test_layer_1_of_a_two_layer_teacher_is_its_first_layers_output_dumped_and_online(
    tmp_path, prepared_data_dir, make_checkpoint, dump_targets_config
):
    """``hidden_layers=[1]`` of a 2-layer teacher: the dump stores, and the online teacher gives,
    the output of the teacher's first Conformer layer, not its last."""
    ckpt = make_checkpoint(tmp_path / "teacher2.ckpt", False)
    teacher = load_model(ckpt)
    assert len(teacher.model.layers) == 2
    out = tmp_path / "targets"
    dump_targets(dump_targets_config(prepared_data_dir, ckpt, out, "hidden_layers=[1]"))
    batch = _first_batch(prepared_data_dir)
    want, last = (_layer_outputs(teacher.model, batch, i) for i in (0, 1))
    (stored,) = CachedTargets(SoftTargetStore(out), hidden_layers=[1])(batch).hidden
    online = OnlineTeacher(teacher.model, temperature=2.0, k=4, hidden_layers=[1])(batch)
    lens = online.lens
    assert (_valid(want, lens) - _valid(last, lens)).abs().max() > 0.1  # the layers differ
    torch.testing.assert_close(_valid(online.hidden[0], lens), _valid(want, lens))
    torch.testing.assert_close(_valid(stored, lens), _valid(want, lens), rtol=1e-3, atol=1e-3)
