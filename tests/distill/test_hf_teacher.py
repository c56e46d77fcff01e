"""A transformers CTC model as the teacher, end to end on the tiny synthetic corpus: prepare with
its tokenizer, dump its soft targets, distil a few steps (cached and online), evaluate it as a
row, transcribe with it; and what is refused (another tokenizer, another teacher's targets)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from asr_kd.config import compose
from asr_kd.data import prepare
from asr_kd.data.datamodule import AsrDataModule, load_cuts
from asr_kd.distill.dump import dump_targets
from asr_kd.distill.hf_teacher import HFTeacher
from asr_kd.distill.store import SoftTargetStore
from asr_kd.errors import ConfigError
from asr_kd.evaluation.run import evaluate
from asr_kd.models.hf import hf_macs_per_audio_second, load_hf
from asr_kd.training.run import distill
from tests.helpers.spy import count_calls
from tests.helpers.tiny_runs import tiny_run


@pytest.fixture(scope="module")
def hf_teacher(hf_model_dir) -> str:
    return f"hf:{hf_model_dir('wav2vec2_conformer')}"


@pytest.fixture(scope="module")
def hf_data_dir(tmp_path_factory, tiny_corpus_dir, hf_teacher) -> Path:
    """The tiny corpus prepared with the teacher's tokenizer (tokenizer=from_teacher)."""
    out = tmp_path_factory.mktemp("hf_data")
    overrides = [f"corpus_dir={tiny_corpus_dir}", f"out_dir={out}", "subsets=[train,dev,test]"]
    prepare.run(
        compose(
            "prepare", [*overrides, "tokenizer=from_teacher", f"tokenizer.teacher={hf_teacher}"]
        )
    )
    return out


@pytest.fixture(scope="module")
def hf_targets(tmp_path_factory, hf_data_dir, hf_teacher) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("hf_targets")
    cfg = compose(
        "dump_targets",
        [f"teacher_ckpt={hf_teacher}", f"data.dir={hf_data_dir}", "subsets=train", f"out_dir={out}"]
        + ["data.num_workers=0", "k=4", "device=cpu"],
    )
    return out, dump_targets(cfg)


def test_prepare_takes_the_teachers_tokenizer(hf_data_dir, hf_teacher):
    from asr_kd.data.teacher_vocab import teacher_vocab

    report = json.loads((hf_data_dir / "prepare_report.json").read_text())
    assert report["tokenizer"]["fingerprint"] == teacher_vocab(hf_teacher).tokenizer.fingerprint
    assert report["tokenizer"]["from_teacher"] is True


def test_dump_fingerprints_the_teacher_and_the_frame_conversion(hf_targets, hf_model_dir):
    from asr_kd.models.hf import weights_sha256

    out, summary = hf_targets
    fingerprint = SoftTargetStore(out).fingerprint
    assert fingerprint["frame_conversion"] == "merge2" and fingerprint["frame_shift_ms"] == 20.0
    assert fingerprint["student_frame_shift_ms"] == 40.0 and fingerprint["k"] == 4
    assert fingerprint["teacher"] == str(hf_model_dir("wav2vec2_conformer"))
    assert fingerprint["checkpoint_sha256"] == weights_sha256(hf_model_dir("wav2vec2_conformer"))
    assert summary["throughput"]["train"]["audio_s_per_s"] > 0
    assert summary["num_cuts"] == json.loads((out / "index.json").read_text())["num_cuts"] > 0


def test_dumped_targets_match_the_students_frames(hf_targets, hf_data_dir):
    """Every stored cut has the student's number of frames (fbank frames // 4) and top-k
    probabilities that sum to at most 1 (the specials' mass is in the "other" bucket)."""
    store = SoftTargetStore(hf_targets[0])
    dm = AsrDataModule(hf_data_dir, num_workers=0)
    for batch in dm.dataloader("train", max_duration=1000):
        for cut_id, n in zip(batch["cut_ids"], batch["feat_lens"].tolist(), strict=True):
            ids, probs = store.get(cut_id)
            assert len(ids) == n // 4, cut_id
            assert float(probs.sum(-1).max()) <= 1.0 + 1e-3
            assert int(ids.max()) < dm.tokenizer.vocab_size


def test_distill_cached_and_online_then_evaluate_with_the_teacher_as_a_row(
    tmp_path, hf_targets, hf_data_dir, hf_teacher
):
    common = [f"teacher_ckpt={hf_teacher}", "distill.k=4", "distill.temperature=2.0"]
    cached = distill(tiny_run("distill", hf_data_dir, tmp_path / "cached", *common,
                              f"targets_dir={hf_targets[0]}", "distill.source=cached"))  # fmt: skip
    online = distill(tiny_run("distill", hf_data_dir, tmp_path / "online", *common,
                              "distill.source=online", steps=2))  # fmt: skip
    assert cached["global_step"] == 3 and online["global_step"] == 2
    assert cached["metrics"]["train/kd"] > 0 and online["metrics"]["train/kd"] > 0
    results = evaluate(
        compose(
            "evaluate",
            [
                f"+ckpt.public={hf_teacher}",
                f"data.dir={hf_data_dir}",
                "plots=false",
                f"ckpt.student_kd={tmp_path / 'cached/checkpoints/last.ckpt'}",
                f"out_dir={tmp_path / 'eval'}",
                "chunk_sizes_ms=[320]",
                "rtf.warmup_utts=0",
            ],
        )  # fmt: skip
    )
    row = next(r for r in results["rows"] if r["model"] == "public")
    assert row["mode"] == "full" and row["runtime"] == "torch"  # even with runtime=onnx
    model = load_hf(hf_teacher).model
    assert row["params"] == sum(p.numel() for p in model.hf.parameters())
    assert row["macs_per_audio_s"] == pytest.approx(hf_macs_per_audio_second(model), rel=1e-6)
    assert row["num_utts"] == len(load_cuts(hf_data_dir, "test"))
    assert row["frame_shift_ms"] == 20.0 and row["source"] == hf_teacher
    assert row["rtf"] > 0 and 0 <= row["cer"]
    assert {r["model"] for r in results["rows"]} == {"public", "student_kd"}


def test_a_student_tokenizer_that_is_not_the_teachers_is_refused(
    tmp_path, prepared_data_dir, hf_teacher
):
    cfg = tiny_run("distill", prepared_data_dir, tmp_path / "s", f"teacher_ckpt={hf_teacher}",
                   "distill.source=online")  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"does not match the student's char tokenizer .*from_teacher"
    ):
        distill(cfg)
    assert not (tmp_path / "s" / "checkpoints").exists()


def test_targets_of_a_teacher_overwritten_in_place_are_refused_by_its_weight_hash(
    tmp_path, hf_data_dir, hf_model_dir
):
    """The same directory with other weights (save_pretrained again) is another teacher: the
    weight hash alone refuses its old targets (the path and the vocabulary are the same)."""
    from tests.helpers.hf_models import make_wav2vec2_conformer

    teacher = shutil.copytree(hf_model_dir("wav2vec2_conformer"), tmp_path / "teacher")
    store = tmp_path / "targets"
    dump_targets(compose("dump_targets", [f"teacher_ckpt=hf:{teacher}", f"data.dir={hf_data_dir}",
                                          "subsets=train", f"out_dir={store}", "k=4", "device=cpu",
                                          "data.num_workers=0"]))  # fmt: skip
    make_wav2vec2_conformer(teacher, seed=1)  # same vocabulary, other weights, same directory
    cfg = tiny_run("distill", hf_data_dir, tmp_path / "s", f"teacher_ckpt=hf:{teacher}",
                   f"targets_dir={store}", "distill.source=cached", "distill.k=4")  # fmt: skip
    with pytest.raises(ConfigError, match="made by another teacher: checkpoint_sha256") as error:
        distill(cfg)
    differs = str(error.value).split("made by another teacher: ")[1].split("; ")
    assert [d.split(":")[0] for d in differs] == ["checkpoint_sha256"]  # the hash, nothing else


@pytest.mark.parametrize(
    ("family", "conversion"), [("wav2vec2_conformer", "merge2"), ("parakeet", "repeat2")]
)
def test_online_teacher_gives_the_students_frames(
    prepared_data_dir, hf_model_dir, family, conversion
):
    """20 ms and 80 ms teachers both come out at the student's 40 ms frames and lengths."""
    teacher = HFTeacher(load_hf(f"hf:{hf_model_dir(family)}"), 4, 40.0, 2.0, k=None, layers=(2,))
    assert teacher.conversion.name == conversion
    dm = AsrDataModule(prepared_data_dir, num_workers=0)
    batch = next(iter(dm.dataloader("dev", with_audio=True)))
    ids, probs, lens, hidden = teacher(batch)
    assert lens.tolist() == (batch["feat_lens"] // 4).tolist()
    assert probs.shape[:2] == hidden[0].shape[:2] == (len(lens), int(lens.max()))
    assert torch.all(probs.sum(-1) <= 1.0 + 1e-5)


def test_hidden_state_kd_from_a_transformers_teacher_cached_and_online(
    tmp_path, hf_data_dir, hf_teacher
):
    """distill=hidden with an hf: teacher: its layers dumped (int8 codec fitted on its frames,
    converted to the student's rate) and read back, or run online; the projection maps the
    student's width to the teacher's (hidden_size 32)."""
    store_dir = tmp_path / "targets"
    dump = [f"teacher_ckpt={hf_teacher}", f"data.dir={hf_data_dir}", "subsets=train",
            f"out_dir={store_dir}", "data.num_workers=0", "k=4", "device=cpu",
            "hidden_layers=[2]", "hidden_compress=int8"]  # fmt: skip
    summary = dump_targets(compose("dump_targets", dump))
    store = SoftTargetStore(store_dir)
    assert store.hidden_layers == (2,) and store.hidden_dim(2) == 32
    assert summary["fingerprint"]["hidden_layers"] == [2]
    assert summary["fingerprint"]["frame_conversion"] == "merge2"
    common = [f"teacher_ckpt={hf_teacher}", "distill=hidden", "distill.k=4",
              "distill.student_layers=[1]", "distill.teacher_layers=[2]"]  # fmt: skip
    for source in ("cached", "online"):
        out = tmp_path / source
        result = distill(tiny_run("distill", hf_data_dir, out, *common, f"targets_dir={store_dir}",
                                  f"distill.source={source}", steps=2))  # fmt: skip
        assert result["global_step"] == 2 and result["metrics"]["train/hidden"] > 0
        state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        assert state["kd_modules.hidden.proj.0.weight"].shape[0] == 32


def test_pseudo_labels_are_the_transformers_teachers_own_decoding(
    tmp_path, hf_data_dir, hf_teacher
):
    """``pseudo_labels=true`` with an ``hf:`` teacher: each cut's label is what the model's own
    greedy decoding (``HFLoaded.decode_ids``: its vocabulary, its blank, specials dropped) gives
    on the dump's padded batch; a distillation reads them, checked against the teacher's
    weights."""
    out = tmp_path / "labels"
    cfg = compose(
        "dump_targets",
        [f"teacher_ckpt={hf_teacher}", f"data.dir={hf_data_dir}", "subsets=train", f"out_dir={out}"]
        + ["data.num_workers=0", "k=4", "device=cpu", "pseudo_labels=true"],
    )
    summary = dump_targets(cfg)
    labels = SoftTargetStore(out).pseudo_labels()
    loaded = load_hf(hf_teacher)
    dm = AsrDataModule(hf_data_dir, num_workers=0)
    want = {}
    for batch in dm.dataloader("train", max_duration=cfg.data.max_duration, with_audio=True):
        with torch.inference_mode():
            log_probs, lens, _ = loaded.model(batch["audio"], batch["audio_lens"])
        want.update(zip(batch["cut_ids"], loaded.decode_ids(log_probs, lens), strict=True))
    assert {cut_id: label["text"] for cut_id, label in labels.items()} == want
    assert any(want.values()) and summary["pseudo_labels"]["train"]["cuts"] == len(want)
    assert all(0.0 <= label["confidence"] <= 1.0 for label in labels.values())
    run = distill(tiny_run("distill", hf_data_dir, tmp_path / "s", f"teacher_ckpt={hf_teacher}",
                           "distill=none", f"distill.pseudo_labels={out}"))  # fmt: skip
    assert run["pseudo_labels"]["untranscribed_cuts"] == 0  # every train cut has its transcript


def test_a_20ms_teacher_is_merged_to_40ms_in_probability_space(prepared_data_dir, hf_model_dir):
    """k = all, T = 1: student frame j holds the mean of teacher frames 2j and 2j + 1's
    probabilities (in the student's columns), not the softmax of their mean log-probs."""
    loaded = load_hf(f"hf:{hf_model_dir('wav2vec2_conformer')}")
    teacher = HFTeacher(loaded, 4, 40.0, 1.0, k=None)
    dm = AsrDataModule(prepared_data_dir, num_workers=0)
    batch = next(iter(dm.dataloader("dev", with_audio=True)))
    ids, probs, lens, _ = teacher(batch)
    with torch.no_grad():
        log_probs, t_lens, _ = loaded.model(batch["audio"], batch["audio_lens"])
    columns = torch.tensor(loaded.vocab.tokenizer.teacher["ids"])
    p = log_probs.exp()[..., columns]  # (B, T_t, V) teacher probabilities, student columns
    assert torch.equal(ids[0, 0], torch.arange(len(columns)))  # k = all: ids in column order
    for b in range(len(lens)):
        pairs = min(int(lens[b]), int(t_lens[b]) // 2)
        assert pairs > 5
        want = (p[b, 0 : 2 * pairs : 2] + p[b, 1 : 2 * pairs : 2]) / 2
        torch.testing.assert_close(probs[b, :pairs], want, rtol=1e-5, atol=1e-6)


def _student_setup(cfg):
    """What asr-kd-distill builds before the teacher: the data module, student and KD config."""
    from omegaconf import OmegaConf

    from asr_kd.data.datamodule import build_datamodule
    from asr_kd.distill.losses import KDConfig
    from asr_kd.training.builders import build_model

    dm = build_datamodule(cfg.data)
    model, _ = build_model(cfg.model, dm)
    return dm, model, KDConfig.from_options(OmegaConf.to_container(cfg.distill, resolve=True))


def test_a_cached_run_opens_and_fingerprints_the_teacher_on_rank_0_only(
    tmp_path, monkeypatch, hf_targets, hf_data_dir, hf_teacher
):
    """Rank 0 loads the transformers teacher and hashes its weights once; another rank loads
    nothing and takes rank 0's checked record (<out_dir>/teacher.json) with the store."""
    import asr_kd.distill.hf_teacher as hf_teacher_module
    import asr_kd.models.hf as hf_module
    from asr_kd.distill.teachers import TEACHER_RECORD, TeacherPlacement, build_teacher_targets

    cfg = tiny_run("distill", hf_data_dir, tmp_path / "run", f"teacher_ckpt={hf_teacher}",
                   f"targets_dir={hf_targets[0]}", "distill.source=cached", "distill.k=4")  # fmt: skip
    dm, student, kd = _student_setup(cfg)
    loads = count_calls(monkeypatch, hf_teacher_module, "load_hf")
    hashes = count_calls(monkeypatch, hf_module, "weights_sha256")
    other = TeacherPlacement(primary=False, wait_s=1.0)
    with pytest.raises(ConfigError, match=f"rank 0 wrote no .*{TEACHER_RECORD}"):
        build_teacher_targets(cfg, student, dm.tokenizer, kd, other)  # rank 0 not done yet
    first = build_teacher_targets(cfg, student, dm.tokenizer, kd, TeacherPlacement())
    assert (len(loads), len(hashes)) == (1, 1)
    second = build_teacher_targets(cfg, student, dm.tokenizer, kd, other)
    assert (len(loads), len(hashes)) == (1, 1)  # rank 1: neither a load nor a hash
    assert second.targets.store.fingerprint == first.targets.store.fingerprint
    assert second.targets.k == first.targets.k == 4 and second.hidden_pairs == ()
    record = json.loads((tmp_path / "run" / TEACHER_RECORD).read_text())
    record["fingerprint"]["checkpoint_sha256"] = "another teacher"  # a record of another run
    (tmp_path / "run" / TEACHER_RECORD).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="rank 0 wrote no"):
        build_teacher_targets(cfg, student, dm.tokenizer, kd, other)


def test_an_online_teacher_takes_the_trainers_precision_and_its_features_come_from_the_workers(
    tmp_path, monkeypatch, hf_data_dir, hf_teacher
):
    """trainer.precision=bf16-mixed: the teacher's weights are bfloat16 on the rank's device;
    with loader workers, each training batch carries the extractor's inputs, so the teacher's
    step never runs the extractor, and its targets are those it computes from the audio."""
    from asr_kd.distill.hf_teacher import TEACHER_INPUTS_KEY
    from asr_kd.distill.teachers import TeacherPlacement, build_teacher_targets
    from asr_kd.training.launch import precision_dtype, rank_device

    cfg = tiny_run("distill", hf_data_dir, tmp_path / "run", f"teacher_ckpt={hf_teacher}",
                   "distill.source=online", "distill.k=4", "trainer.precision=bf16-mixed",
                   "data.num_workers=1")  # fmt: skip
    dm, student, kd = _student_setup(cfg)
    placement = TeacherPlacement(rank_device(cfg.trainer), precision_dtype(cfg.trainer.precision))
    teacher = build_teacher_targets(cfg, student, dm.tokenizer, kd, placement).targets
    assert {p.dtype for p in teacher.loaded.model.hf.parameters()} == {torch.bfloat16}
    dm.with_audio, dm.train_batch_fields = True, teacher.batch_fields
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # built in a worker process
    assert set(batch[TEACHER_INPUTS_KEY]) == {"inputs", "mask"}
    calls = count_calls(monkeypatch, type(teacher.batch_fields.extract), "__call__")
    from_workers = teacher(batch)
    assert calls == []  # nothing extracted on the training thread
    here = teacher({k: v for k, v in batch.items() if k != TEACHER_INPUTS_KEY})
    assert len(calls) == 1
    for a, b in zip(from_workers[:3], here[:3], strict=True):
        assert torch.equal(a, b)
    result = distill(cfg)  # the whole run under bf16-mixed autocast on the CPU
    assert result["global_step"] == 3 and result["metrics"]["train/kd"] > 0
