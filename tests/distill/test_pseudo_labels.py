"""Teacher pseudo-labels: written by asr-kd-dump-targets pseudo_labels=true, trained on by
asr-kd-distill distill.pseudo_labels=... for the cuts without a transcript."""

from __future__ import annotations

import json

import pytest
import torch

from asr_kd.checkpoint import file_sha256
from asr_kd.config import compose
from asr_kd.data.datamodule import AsrDataModule, AsrDataset, load_cuts
from asr_kd.distill.dump import dump_targets
from asr_kd.distill.pseudo import load_pseudo_labels
from asr_kd.distill.store import SoftTargetStore
from asr_kd.errors import BadFileError, ConfigError, MissingFileError
from asr_kd.models.decode import greedy_ctc
from asr_kd.models.loading import load_model
from asr_kd.training.run import distill

SUBSETS = "subsets=[train,test]"


@pytest.fixture(scope="module")
def untranscribed_data_dir(tmp_path_factory, tiny_corpus_dir):
    """The tiny corpus prepared with ``test`` as an untranscribed subset (cuts with text "")."""
    from asr_kd.data import prepare

    out = tmp_path_factory.mktemp("untranscribed_data")
    overrides = [f"corpus_dir={tiny_corpus_dir}", f"out_dir={out}", "subsets=[train,dev,test]"]
    prepare.run(compose("prepare", [*overrides, "untranscribed_subsets=[test]", "tokenizer=char"]))
    return out


@pytest.fixture(scope="module")
def label_teacher(tmp_path_factory, make_checkpoint):
    """An untrained full-context teacher: its greedy transcripts are non-empty gibberish, which
    is all these tests need (a 3-step trained one emits mostly blanks)."""
    return make_checkpoint(tmp_path_factory.mktemp("label_teacher") / "teacher.ckpt", False)


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory, untranscribed_data_dir, label_teacher, dump_targets_config):
    """``(out_dir, summary)`` of a dump with pseudo-labels of train and (untranscribed) test."""
    out = tmp_path_factory.mktemp("labelled_store")
    cfg = dump_targets_config(
        untranscribed_data_dir, label_teacher, out, SUBSETS, "pseudo_labels=true"
    )
    return out, dump_targets(cfg)


def _peak_confidence(log_probs: torch.Tensor) -> float:
    """The mean, over the tokens greedy CTC emits, of the largest probability in each token's
    run of argmax frames (0.0 for none): a plain loop over (T', V) log-probs."""
    probs, ids = log_probs.exp().max(-1)
    peaks, run_id, run_peak = [], None, 0.0
    for i, p in zip(ids.tolist() + [None], probs.tolist() + [0.0], strict=True):
        if i != run_id:
            if run_id not in (None, 0):
                peaks.append(run_peak)
            run_id, run_peak = i, p
        run_peak = max(run_peak, p)
    return sum(peaks) / len(peaks) if peaks else 0.0


def _teacher_transcripts(teacher_ckpt, data_dir, subset, confidence=False) -> dict:
    """Cut id -> greedy_ctc decoding of the teacher, one cut at a time (no padding); with
    ``confidence``, cut id -> (text, :func:`_peak_confidence`)."""
    teacher = load_model(teacher_ckpt)
    dm = AsrDataModule(data_dir, num_workers=0)
    out = {}
    for cut in load_cuts(data_dir, subset):
        feats = torch.from_numpy(cut.load_features()).float()[None]
        with torch.no_grad():
            log_probs, lens = teacher.model(feats, torch.tensor([feats.shape[1]]))
        out[cut.id] = dm.tokenizer.decode(greedy_ctc(log_probs, lens)[0])
        if confidence:
            out[cut.id] = (out[cut.id], _peak_confidence(log_probs[0, : int(lens[0])]))
    return out


def test_the_dump_writes_the_teachers_greedy_transcripts(
    labelled_store, label_teacher, untranscribed_data_dir
):
    out_dir, summary = labelled_store
    labels = SoftTargetStore(out_dir).pseudo_labels()
    for subset in ("train", "test"):
        want = _teacher_transcripts(label_teacher, untranscribed_data_dir, subset, True)
        assert {c: labels[c]["text"] for c in want} == {c: text for c, (text, _) in want.items()}
        for cut_id, (_, confidence) in want.items():  # padded batch vs one cut: float noise
            assert labels[cut_id]["confidence"] == pytest.approx(confidence, abs=1e-4), cut_id
        assert summary["pseudo_labels"][subset]["cuts"] == len(want)
    assert any(label["text"] for label in labels.values())  # the check above is not all ""
    confidences = [label["confidence"] for label in labels.values()]
    assert len(set(confidences)) > 1
    assert all((lab["num_tokens"] == 0) == (lab["text"] == "") for lab in labels.values())
    index = json.loads((out_dir / "index.json").read_text())
    assert index["pseudo_labels"] == {
        "confidence": "mean_token_peak_posterior",
        "num_cuts": len(labels),
    }
    kept = summary["pseudo_labels"]["test"]["kept_at"]
    assert kept["0.5"] >= kept["0.9"] >= kept["0.95"]


def test_a_damaged_labels_file_is_named_by_verify_and_recomputed_by_a_resume(
    tmp_path, labelled_store, label_teacher, untranscribed_data_dir, dump_targets_config
):
    import shutil

    src, _ = labelled_store
    out_dir = tmp_path / "store"
    shutil.copytree(src, out_dir)
    before = SoftTargetStore(out_dir).pseudo_labels()
    path = sorted(out_dir.glob("shard_*.labels.jsonl"))[0]
    raw = bytearray(path.read_bytes())
    raw[10] ^= 1  # same size: open (stat only) passes, verify (SHA-256) does not
    path.write_bytes(bytes(raw))
    SoftTargetStore(out_dir)
    with pytest.raises(BadFileError, match=f"{path.name} has SHA-256.*pseudo_labels=true"):
        SoftTargetStore(out_dir).verify()
    cfg = dump_targets_config(
        untranscribed_data_dir, label_teacher, out_dir, SUBSETS, "pseudo_labels=true"
    )
    summary = dump_targets(cfg)
    assert summary["removed_shards"] == [path.name[: -len(".labels.jsonl")]]
    assert SoftTargetStore(out_dir).verify()["verified"]
    assert SoftTargetStore(out_dir).pseudo_labels() == before
    path = sorted(out_dir.glob("shard_*.labels.jsonl"))[0]
    path.write_bytes(path.read_bytes()[:-5])  # truncated: named on open
    with pytest.raises(BadFileError, match=f"{path.name} is .* bytes"):
        SoftTargetStore(out_dir)


def test_a_resume_with_labels_relabels_shards_dumped_without_them(
    tmp_path, label_teacher, untranscribed_data_dir, labelled_store, dump_targets_config
):
    out_dir = tmp_path / "store"
    cfg = dump_targets_config(untranscribed_data_dir, label_teacher, out_dir, SUBSETS)
    plain = dump_targets(cfg)
    assert "pseudo_labels" not in plain and SoftTargetStore(out_dir).pseudo_labels() == {}
    labelled = dump_targets(
        dump_targets_config(
            untranscribed_data_dir, label_teacher, out_dir, "subsets=test", "pseudo_labels=true"
        )
    )
    assert labelled["resumed_cuts"] == 0 and labelled["removed_shards"]  # test's, dumped again
    labels = SoftTargetStore(out_dir).pseudo_labels()
    test_ids = {c.id for c in load_cuts(untranscribed_data_dir, "test")}
    assert set(labels) == test_ids  # train's shards, not dumped here, are left as they were
    assert labels == {
        c: v for c, v in SoftTargetStore(labelled_store[0]).pseudo_labels().items() if c in test_ids
    }


def test_labels_of_another_teacher_are_refused(
    tmp_path, labelled_store, untranscribed_data_dir, teacher_ckpt
):
    out_dir, _ = labelled_store
    tokenizer = AsrDataModule(untranscribed_data_dir, num_workers=0).tokenizer
    with pytest.raises(ConfigError, match="checkpoint_sha256"):
        load_pseudo_labels(
            out_dir, untranscribed_data_dir, ["test"], 0.0, tokenizer, file_sha256(teacher_ckpt)
        )


def test_the_threshold_keeps_confident_untranscribed_cuts_and_real_transcripts_win(
    labelled_store, untranscribed_data_dir
):
    out_dir, _ = labelled_store
    labels = SoftTargetStore(out_dir).pseudo_labels()
    dm = AsrDataModule(untranscribed_data_dir, num_workers=0)
    test_ids = [c.id for c in load_cuts(untranscribed_data_dir, "test")]
    confidences = sorted(labels[c]["confidence"] for c in test_ids)
    threshold = confidences[len(confidences) // 2]
    pseudo = load_pseudo_labels(
        out_dir, untranscribed_data_dir, ["train", "test"], threshold, dm.tokenizer
    )
    want = {c for c in test_ids if labels[c]["confidence"] >= threshold and labels[c]["text"]}
    assert set(pseudo.texts) == want and 0 < len(want) < len(test_ids)
    assert (
        pseudo.summary["untranscribed_cuts"] == pseudo.summary["pseudo_labelled"] == len(test_ids)
    )
    assert pseudo.summary["kept"] == len(want)
    assert pseudo.summary["below_threshold"] == len(test_ids) - len(want)
    train = list(load_cuts(untranscribed_data_dir, "train"))
    assert pseudo.summary["transcribed_cuts_with_label"] == len(train)
    # the dataset: a pseudo text is the CTC target of an untranscribed cut only
    kept_cut = next(c for c in load_cuts(untranscribed_data_dir, "test") if c.id in want)
    wrong = {train[0].id: "WRONG", **pseudo.texts}
    batch = AsrDataset(dm.tokenizer, pseudo_texts=wrong)[[train[0], kept_cut]]
    real = train[0].supervisions[0].text
    assert batch["tokens"][0, : batch["token_lens"][0]].tolist() == dm.tokenizer.encode(real)
    assert batch["tokens"][1, : batch["token_lens"][1]].tolist() == dm.tokenizer.encode(
        pseudo.texts[kept_cut.id]
    )
    assert batch["texts"] == [real, ""]  # the reference stays empty


def test_without_kd_the_cuts_below_the_threshold_are_dropped(untranscribed_data_dir):
    dm = AsrDataModule(untranscribed_data_dir, train_subset=["train", "test"], num_workers=0)
    test_ids = [c.id for c in load_cuts(untranscribed_data_dir, "test")]
    num_train = len(load_cuts(untranscribed_data_dir, "train"))
    dm.use_pseudo_labels({test_ids[0]: "A"}, drop_untranscribed=False)
    assert dm._train_cuts()[1] == num_train + len(test_ids)
    dm.use_pseudo_labels({test_ids[0]: "A"}, drop_untranscribed=True)
    cuts, count = dm._train_cuts()
    assert count == num_train + 1 and test_ids[0] in {c.id for c in cuts}


def test_untranscribed_cuts_without_labels_are_an_error_naming_the_dump(
    tmp_path, label_teacher, untranscribed_data_dir, dump_targets_config
):
    out_dir = tmp_path / "store"
    cfg = dump_targets_config(
        untranscribed_data_dir, label_teacher, out_dir, "subsets=train", "pseudo_labels=true"
    )
    dump_targets(cfg)
    tokenizer = AsrDataModule(untranscribed_data_dir, num_workers=0).tokenizer
    with pytest.raises(MissingFileError, match=r"untranscribed cuts .* pseudo_labels=true"):
        load_pseudo_labels(out_dir, untranscribed_data_dir, ["train", "test"], 0.0, tokenizer)


def _distill_untranscribed(tiny_config, data_dir, out_dir, teacher, store, *overrides):
    cfg = tiny_config(
        "distill",
        data_dir,
        out_dir,
        "distill=pseudo",
        f"teacher_ckpt={teacher}",
        f"targets_dir={store}",
        "data.train_subset=[test]",  # untranscribed only: CTC has nothing but pseudo-labels
        *overrides,
        steps=2,
    )
    return distill(cfg)


def test_a_few_steps_on_an_untranscribed_subset_train_ctc_on_the_pseudo_labels(
    tmp_path, tiny_config, untranscribed_data_dir, label_teacher, labelled_store, one_thread
):
    store, _ = labelled_store
    args = (tiny_config, untranscribed_data_dir)
    # the untrained teacher's confidences are arbitrary: keep every label (the threshold itself
    # is pinned by test_the_threshold_keeps_*), so CTC must train on all of them
    with_labels = _distill_untranscribed(
        *args, tmp_path / "a", label_teacher, store, "distill.pseudo_min_confidence=0.0"
    )
    summary = with_labels["pseudo_labels"]
    assert summary["kept"] == summary["untranscribed_cuts"] - summary["below_threshold"] > 0
    assert summary["below_threshold_cuts"] == "kd_only"
    assert with_labels["metrics"]["train/ctc"] > 0.0
    without = _distill_untranscribed(
        *args, tmp_path / "b", label_teacher, store, "distill.pseudo_labels=null"
    )
    assert "pseudo_labels" not in without
    assert without["metrics"]["train/ctc"] == 0.0  # KD only: no transcript in the subset
