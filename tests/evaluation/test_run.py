"""asr-kd-evaluate on a tiny prepared corpus with tiny untrained (but valid) checkpoints."""

from __future__ import annotations

import csv
import json
import os
import shutil
import types
import warnings
from pathlib import Path

import pytest
import torch
from lhotse import CutSet
from omegaconf import OmegaConf

from asr_kd.config import compose
from asr_kd.data.prepare import prepare_skips
from asr_kd.evaluation.report import load_results
from asr_kd.evaluation.run import evaluate
from asr_kd.export.quantize import INT8_TOLERANCE
from asr_kd.metrics import error_rates
from asr_kd.models.decode import greedy_ctc
from asr_kd.models.loading import load_model


def _overrides(data_dir, out_dir, **checkpoints):
    ckpts = [f"ckpt.{name}={path}" for name, path in checkpoints.items()]
    return [
        f"data.dir={data_dir}",
        f"out_dir={out_dir}",
        "subsets=[test]",
        "chunk_sizes_ms=[160,320]",
        "rtf.warmup_utts=1",
        *ckpts,
    ]


def _read_hyps(path):
    with open(path, newline="") as f:
        return {r["cut_id"]: r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, prepared_data_dir, make_checkpoint):
    root = tmp_path_factory.mktemp("evaluate")
    teacher = make_checkpoint(root / "teacher.ckpt", streaming=False)
    student = make_checkpoint(root / "student.ckpt", streaming=True)
    cfg = compose(
        "evaluate", _overrides(prepared_data_dir, root / "out", teacher=teacher, student_kd=student)
    )
    with (
        pytest.MonkeyPatch.context() as patch
    ):  # no RAPL, as on our machines (metrics tests fake one)
        patch.setattr("asr_kd.metrics.POWERCAP_ROOT", root / "no-powercap")
        return cfg, evaluate(cfg)


def test_rows_per_model_and_mode_with_the_reported_figures(evaluated):
    cfg, results = evaluated
    modes = [(r["model"], r["mode"]) for r in results["rows"]]
    assert modes == [
        ("teacher", "full"),
        ("student_kd", "full"),
        ("student_kd", "stream-160ms"),
        ("student_kd", "stream-320ms"),
    ]
    teacher, student_full, _, stream = results["rows"]
    assert teacher["latency_ms"] is None and stream["latency_ms"] == 320.0
    assert (stream["chunk_ms"], stream["batch_size"], stream["threads"]) == (320, 1, 1)
    assert student_full["params"] < teacher["params"]
    test_cuts = CutSet.from_file(cfg.data.dir + "/cuts_test.jsonl.gz")
    audio_s = sum(c.duration for c in test_cuts)
    for row in results["rows"]:
        assert row["num_utts"] == len(test_cuts)
        # the seconds of audio decoded (10 ms feature frames: within a frame per cut)
        assert row["audio_s"] == pytest.approx(audio_s, abs=0.01 * len(test_cuts))
        assert row["rtf"] > 0 and row["macs_per_audio_s"] > 0 and row["model_mb"] > 0
    # 5 utterances < rtf.max_utts: the batch-1 pass alone scores them (tests/evaluation/
    # test_batched.py: the batched path)
    assert teacher["rtf_batch"] is None and stream["rtf_batch"] is None
    meta = results["meta"]
    assert meta["torch"] == torch.__version__ and meta["rtf_threads"] == 1
    assert set(meta["checkpoints"]) == {"teacher", "student_kd"}


def test_every_row_has_its_cost_per_audio_hour_and_no_energy_estimate(evaluated):
    cfg, results = evaluated
    for row in results["rows"]:
        assert row["cpu_s_per_audio_h"] > 0, row["mode"]
        assert row["joules_per_audio_h"] is None and row["energy_note"] == "n/a (no RAPL)"
        assert row["quantize"] == "none" and 0 < row["graph_mb"]
    md = open(f"{cfg.out_dir}/results.md").read()
    assert "CPU s / audio h" in md and "J / audio h" in md
    assert md.count("n/a (no RAPL) |") == len(results["rows"])
    assert open(f"{cfg.out_dir}/wer_vs_cpu.png", "rb").read(4) == b"\x89PNG"


@pytest.fixture(scope="module")
def evaluated_int8(tmp_path_factory, evaluated, prepared_data_dir):
    """quantize=[none,int8] on the student of ``evaluated`` (320 ms chunks)."""
    cfg, _ = evaluated
    out = tmp_path_factory.mktemp("evaluate_int8")
    overrides = _overrides(prepared_data_dir, out, student_kd=cfg.ckpt.student_kd)
    cfg_int8 = compose("evaluate", [*overrides, "chunk_sizes_ms=[320]", "quantize=[none,int8]"])
    return cfg_int8, evaluate(cfg_int8)


def test_int8_rows_beside_fp32_rows(evaluated_int8):
    cfg, results = evaluated_int8
    rows = results["rows"]
    assert [(r["mode"], r["quantize"]) for r in rows] == [
        ("full", "none"),
        ("full", "int8"),
        ("stream-320ms", "none"),
        ("stream-320ms", "int8"),
    ]
    for fp32, int8 in (rows[:2], rows[2:]):
        # 0.65: the tiny full graph holds no rotated weight copies (export.fold), so its fixed
        # part (metadata, CMVN, scales) is a larger share than in a real model's (0.27 x)
        assert int8["graph_mb"] < 0.65 * fp32["graph_mb"] and int8["model_mb"] == fp32["model_mb"]
        assert int8["rtf"] > 0 and int8["cpu_s_per_audio_h"] > 0 and int8["rtf_batch"] is None
        hyps = _read_hyps(f"{cfg.out_dir}/hyps/student_kd.test.{int8['mode']}-int8.tsv")
        refs = [h["reference"] for h in hyps.values()]
        rates = error_rates(refs, [h["hypothesis"] or "" for h in hyps.values()])
        assert int8["wer"] == pytest.approx(rates["wer"])
    onnx_dir = f"{cfg.out_dir}/onnx/student_kd/int8"
    assert sorted(os.listdir(onnx_dir)) == ["full.onnx", "stream-c8-l2.onnx"]
    diffs = results["meta"]["onnx_max_abs_diff"]["student_kd"]
    assert set(diffs) == {"full", "stream-c8", "full int8", "stream-c8 int8"}
    assert diffs["full"] < 1e-3 < diffs["full int8"] <= INT8_TOLERANCE
    md = open(f"{cfg.out_dir}/results.md").read()
    assert "| student_kd (int8) | stream-320ms |" in md and "| student_kd | stream-320ms |" in md


def test_report_files_are_written_and_parseable(evaluated):
    cfg, results = evaluated
    out = cfg.out_dir
    assert load_results(f"{out}/results.json")["rows"] == json.loads(json.dumps(results["rows"]))
    md = open(f"{out}/results.md").read()
    assert "| student_kd | stream-320ms |" in md and "| teacher | full |" in md
    for png in ("wer_vs_latency.png", "wer_vs_macs.png"):
        assert open(f"{out}/{png}", "rb").read(4) == b"\x89PNG"
    assert "ckpt:" in open(f"{out}/config.yaml").read()


def test_student_rows_say_what_they_took_from_the_teacher(evaluated):
    """Every student row (full and each chunk size) is compared with ``ckpt.teacher``: frame
    agreement, KL and its word errors split, in results.json, results.md and a plot."""
    cfg, results = evaluated
    teacher, *students = results["rows"]
    assert "teacher" not in teacher and "err_shared" not in teacher
    for row in students:
        assert row["teacher"] == "teacher" and "agreement_note" not in row
        assert 0 <= row["agree_nonblank"] <= 100 and row["kl_teacher_student"] > 0
        assert row["err_shared"] + row["err_own"] == pytest.approx(row["wer"])
        assert row["err_shared"] + row["err_fixed"] == pytest.approx(teacher["wer"])
    md = open(f"{cfg.out_dir}/results.md").read()
    assert "Agree non-blank %" in md and "Errors shared %" in md
    assert open(f"{cfg.out_dir}/wer_vs_agreement.png", "rb").read(4) == b"\x89PNG"


def test_row_figures_are_those_of_its_hypotheses_file(evaluated):
    """wer, cer, sub, del and ins of a row: the error rates of the hypotheses it wrote."""
    cfg, results = evaluated
    for row in results["rows"]:
        hyps = _read_hyps(f"{cfg.out_dir}/hyps/{row['model']}.test.{row['mode']}.tsv")
        assert len(hyps) == row["num_utts"]
        refs = [h["reference"] for h in hyps.values()]
        rates = error_rates(refs, [h["hypothesis"] or "" for h in hyps.values()])
        for key in ("wer", "cer", "sub", "del", "ins"):
            assert row[key] == pytest.approx(rates[key]), key
    # the rows have unequal sub, del and ins (else swapped figures would go unnoticed here)
    assert any(len({r["sub"], r["del"], r["ins"]}) == 3 for r in results["rows"])


def test_rtf_is_timed_decoding_over_audio_seconds_with_the_warm_up_untimed(monkeypatch):
    """decode_one_at_a_time on a fake clock: each decode costs 0.25 s per second of audio, the
    first (the warm-up) 5 s more; RTF = 0.25 exactly, over 1 + 2 + 3 s of audio."""
    import asr_kd.metrics as metrics
    from asr_kd.inference.timing import Utterance, decode_one_at_a_time

    clock = types.SimpleNamespace(now=0.0, cpu=0.0)
    fake_time = types.SimpleNamespace(
        perf_counter=lambda: clock.now, process_time=lambda: clock.cpu
    )
    monkeypatch.setattr(metrics, "time", fake_time)
    calls = []

    def decode(feats):  # a Decoder: the utterance's features (T, 80) -> text
        seconds = feats.shape[0] / 100
        clock.now += 0.25 * seconds + (5.0 if not calls else 0.0)
        clock.cpu += 0.2 * seconds + (5.0 if not calls else 0.0)
        calls.append(seconds)
        return f"text {seconds:g}"

    utts = [Utterance(f"u{i}", f"TEXT {i}", torch.zeros(100 * i, 80)) for i in (1, 2, 3)]
    decoded = decode_one_at_a_time(
        decode, iter(utts), threads=1, warmup_utts=1, max_utts=None, desc="t", total=3
    )
    assert calls == [1, 1, 2, 3]  # the first one twice: warm-up, then timed
    assert decoded.audio_s == pytest.approx(6.0)
    assert decoded.seconds == pytest.approx(1.5)
    assert decoded.rtf == pytest.approx(0.25)
    assert decoded.cpu_s_per_audio_h == pytest.approx(0.2 * 3600)
    assert decoded.hyps == {"u1": "text 1", "u2": "text 2", "u3": "text 3"}
    assert decoded.refs == {"u1": "TEXT 1", "u2": "TEXT 2", "u3": "TEXT 3"}


def test_joules_per_audio_hour_from_a_powercap_tree_with_wrap_around(tmp_path, monkeypatch):
    """decode_one_at_a_time on a fake RAPL package counter (max 10 J): each decode costs 2 J
    per second of audio, the warm-up 50 J more (untimed); the counter wraps on the way."""
    import asr_kd.metrics as metrics
    from asr_kd.inference.timing import Utterance, decode_one_at_a_time

    package = tmp_path / "intel-rapl:0"
    package.mkdir()
    (package / "max_energy_range_uj").write_text("10000000\n")
    counter = types.SimpleNamespace(uj=9_000_000)
    (package / "energy_uj").write_text(f"{counter.uj}\n")
    monkeypatch.setattr(metrics, "POWERCAP_ROOT", tmp_path)
    warmed = []

    def decode(feats):
        joules = 2.0 * feats.shape[0] / 100 + (50.0 if not warmed else 0.0)
        warmed.append(True)
        counter.uj = (counter.uj + round(joules * 1e6)) % 10_000_001
        (package / "energy_uj").write_text(f"{counter.uj}\n")
        return "text"

    utts = [Utterance(f"u{i}", "TEXT", torch.zeros(100 * i, 80)) for i in (1, 2, 3)]
    decoded = decode_one_at_a_time(
        decode, iter(utts), threads=1, warmup_utts=1, max_utts=None, desc="t", total=3
    )
    assert decoded.joules == pytest.approx(12.0) and decoded.energy_note is None
    assert decoded.joules_per_audio_h == pytest.approx(2.0 * 3600)


def test_streaming_rows_decode_through_the_chunk_path(evaluated, prepared_data_dir):
    """The streamed hypotheses equal greedy decoding of the chunk-masked full forward."""
    cfg, _ = evaluated
    from asr_kd.data.datamodule import AsrDataModule

    loaded = load_model(cfg.ckpt.student_kd)
    hyps = _read_hyps(f"{cfg.out_dir}/hyps/student_kd.test.stream-320ms.tsv")
    dm = AsrDataModule(prepared_data_dir, num_workers=0)
    left = loaded.model.default_left_chunks
    expected = {}
    with torch.inference_mode():
        for batch in dm.dataloader("test"):
            lp, lens = loaded.model(batch["feats"], batch["feat_lens"], 8, left)
            for cut_id, ids in zip(batch["cut_ids"], greedy_ctc(lp, lens), strict=True):
                expected[cut_id] = loaded.tokenizer.decode(ids)
    assert any(expected.values()), "an all-blank model would make this test vacuous"
    assert {k: h["hypothesis"] or "" for k, h in hyps.items()} == expected


def test_bad_requests_are_clear_errors(tmp_path, prepared_data_dir, make_checkpoint):
    student = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    cfg = compose(
        "evaluate",
        _overrides(prepared_data_dir, tmp_path / "a", student_kd=student)
        + ["chunk_sizes_ms=[100]"],
    )
    with pytest.raises(ValueError, match="chunk_sizes_ms entry 100 .* frame shift 40 ms"):
        evaluate(cfg)
    cfg = compose("evaluate", _overrides(prepared_data_dir, tmp_path / "b"))
    with pytest.raises(ValueError, match="no checkpoints to evaluate"):
        evaluate(cfg)
    cfg = compose(
        "evaluate", _overrides(prepared_data_dir, tmp_path / "c", teacher=tmp_path / "absent.ckpt")
    )
    with pytest.raises(FileNotFoundError, match="absent.ckpt"):
        evaluate(cfg)
    cfg = compose(
        "evaluate",
        _overrides(prepared_data_dir, tmp_path / "d", student_kd=student)
        + ["runtime=torch", "quantize=[none,int8]"],
    )
    with pytest.raises(ValueError, match="needs runtime=onnx"):
        evaluate(cfg)
    cfg = compose(
        "evaluate",
        _overrides(prepared_data_dir, tmp_path / "e", student_kd=student) + ["quantize=[fp16]"],
    )
    with pytest.raises(ValueError, match="quantize entry='fp16'"):
        evaluate(cfg)


def test_clean_prepare_report_is_recorded_and_not_shouted(evaluated, prepared_data_dir):
    """The tiny corpus lost nothing at prepare time: meta says 0, the heading says nothing."""
    cfg, results = evaluated
    assert results["meta"]["prepare"] == {
        "report": str(prepared_data_dir / "prepare_report.json"),
        "subsets": {"test": {"skipped": 0, "reasons": {}}},
    }
    assert "dropped by asr-kd-prepare" not in open(f"{cfg.out_dir}/results.md").read()


def _copy_with_report(prepared_data_dir, dest, report):
    """The prepared data dir with another prepare_report.json (None: without one); the cuts
    point at the original feature files by absolute path."""
    shutil.copytree(prepared_data_dir, dest, ignore=shutil.ignore_patterns("feats"))
    (dest / "prepare_report.json").unlink()
    if report is not None:
        (dest / "prepare_report.json").write_text(json.dumps(report))
    return dest


def test_cuts_dropped_at_prepare_time_are_reported_per_subset(
    tmp_path, prepared_data_dir, make_checkpoint
):
    report = json.loads((prepared_data_dir / "prepare_report.json").read_text())
    report["subsets"]["test"]["skipped"] = 3  # resampled audio is kept: not a skip
    report["subsets"]["test"]["reasons"] = {
        "empty_transcript": {"count": 1, "examples": ["1-2-0003.flac"]},
        "resampled": {"count": 4, "examples": ["1-2-0000.flac (22050 Hz)"]},
        "too_short_for_ctc": {"count": 2, "examples": ["1-2-0001", "1-2-0002"]},
    }
    student = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    fast = ["runtime=torch", "plots=false", "chunk_sizes_ms=[320]", "rtf.warmup_utts=0"]
    results = {}
    for name, prepared in (("skips", report), ("no_report", None)):
        data_dir = _copy_with_report(prepared_data_dir, tmp_path / f"data_{name}", prepared)
        overrides = _overrides(data_dir, tmp_path / name, student_kd=student) + fast
        results[name] = evaluate(compose("evaluate", overrides))

    skips = results["skips"]
    assert skips["meta"]["prepare"]["subsets"] == {
        "test": {"skipped": 3, "reasons": {"empty_transcript": 1, "too_short_for_ctc": 2}}
    }
    saved = json.loads((tmp_path / "skips" / "results.json").read_text())
    assert saved["meta"]["prepare"] == skips["meta"]["prepare"]
    num_utts = skips["rows"][0]["num_utts"]
    heading = f"## test ({num_utts} utterances, "
    md = (tmp_path / "skips" / "results.md").read_text().splitlines()
    assert [line for line in md if line.startswith(heading)][0].endswith(
        " min; 3 cut(s) dropped by asr-kd-prepare: empty_transcript 1, too_short_for_ctc 2)"
    )
    # No report: nothing said, nothing failed; the rows are the same either way.
    absent = results["no_report"]
    assert "prepare" not in absent["meta"]
    assert "by asr-kd-prepare" not in (tmp_path / "no_report" / "results.md").read_text()
    for a, b in zip(skips["rows"], absent["rows"], strict=True):
        assert list(a) == list(b) and (a["wer"], a["num_utts"]) == (b["wer"], b["num_utts"])


def test_unreadable_prepare_report_warns_and_evaluation_goes_on(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no report is the normal case: not even a warning
        assert prepare_skips(tmp_path, ["test"]) is None
    (tmp_path / "prepare_report.json").write_text('{"subsets": ')
    with pytest.warns(UserWarning, match="prepare_report.json is not an asr-kd-prepare report"):
        assert prepare_skips(tmp_path, ["test"]) is None
    (tmp_path / "prepare_report.json").write_text('{"subsets": {"dev": {}}}')
    assert prepare_skips(tmp_path, ["test"]) == {
        "report": str(tmp_path / "prepare_report.json"),
        "subsets": {},
    }


@pytest.fixture(scope="module")
def evaluated_torch(tmp_path_factory, evaluated, prepared_data_dir):
    """runtime=torch on the student of ``evaluated`` (320 ms chunks), recording the frames of
    every streaming ``push`` call (``accept`` without the partial transcript)."""
    from asr_kd.inference.decoders import StreamingGreedyDecoder

    cfg, _ = evaluated
    out = tmp_path_factory.mktemp("evaluate_torch")
    overrides = _overrides(prepared_data_dir, out, student_kd=cfg.ckpt.student_kd)
    overrides += ["runtime=torch", "chunk_sizes_ms=[320]", "plots=false"]
    sizes, push = [], StreamingGreedyDecoder.push  # evaluate makes no partials

    def recording_push(self, feats):
        sizes.append(feats.shape[-2])
        return push(self, feats)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StreamingGreedyDecoder, "push", recording_push)
        cfg_torch = compose("evaluate", overrides)
        return cfg_torch, evaluate(cfg_torch), sizes


def test_torch_streaming_feeds_the_model_one_chunk_at_a_time(evaluated_torch, prepared_data_dir):
    """Regression: runtime=torch handed the whole (1, T, F) utterance to one accept() call, so
    its streaming RTF was not that of a live feed."""
    from asr_kd.data.datamodule import AsrDataModule
    from asr_kd.inference.timing import utterances

    cfg, _, sizes = evaluated_torch
    step = 8 * 4  # 320 ms chunks = 8 encoder frames of 4 fbank frames
    batches = AsrDataModule(prepared_data_dir, num_workers=0).dataloader(
        "test", shuffle=False, max_duration=float(cfg.data.max_duration)
    )
    frames = [utt.feats.shape[0] for utt in utterances(batches)]
    frames.insert(0, frames[0])  # rtf.warmup_utts=1: the first one is decoded twice
    assert max(sizes) == step and max(frames) > step
    assert len(sizes) == sum(-(-n // step) for n in frames)  # ceil(frames / step) each


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
@pytest.mark.parametrize("mode", ["full", "stream-320ms"])
def test_evaluate_and_transcribe_give_the_same_text_through_the_factory(
    evaluated, evaluated_torch, prepared_data_dir, runtime, mode
):
    """The hypotheses asr-kd-evaluate wrote are what asr-kd-transcribe's decoder makes of the
    same utterances, same checkpoint (torch) or same export directory (onnx)."""
    from pathlib import Path

    from asr_kd.data.datamodule import AsrDataModule
    from asr_kd.inference.timing import utterances
    from asr_kd.inference.transcribe import TranscribeOptions, open_decoder

    cfg = evaluated[0] if runtime == "onnx" else evaluated_torch[0]
    hyps = _read_hyps(f"{cfg.out_dir}/hyps/student_kd.test.{mode}.tsv")
    streaming = mode != "full"
    options = TranscribeOptions(
        ckpt=Path(cfg.ckpt.student_kd) if runtime == "torch" else None,
        onnx=Path(cfg.out_dir) / "onnx" / "student_kd" if runtime == "onnx" else None,
        streaming=streaming,
        chunk_ms=320 if streaming else None,
        left_chunks=None,
        threads=1,
    )
    decoder = open_decoder(options)
    assert (decoder.runtime, decoder.streaming) == (runtime, streaming)
    batches = AsrDataModule(prepared_data_dir, num_workers=0).dataloader("test", shuffle=False)
    texts = {utt.cut_id: decoder(utt.feats) for utt in utterances(batches)}
    assert any(texts.values()), "an all-blank model would make this test vacuous"
    assert texts == {k: h["hypothesis"] or "" for k, h in hyps.items()}


def test_subsets_are_checked_before_any_decoding_and_a_bare_name_is_one_subset(
    tmp_path, prepared_data_dir, make_checkpoint
):
    """Regression: a subset that was never prepared failed only after every model was exported
    and every earlier subset decoded; ``subsets=test`` was read as the subsets t, e, s, t."""
    student = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    out = tmp_path / "typo"
    cfg = compose(
        "evaluate",
        _overrides(prepared_data_dir, out, student_kd=student) + ["subsets=[test,tset]"],
    )
    with pytest.raises(FileNotFoundError, match="no prepared subset 'tset'"):
        evaluate(cfg)
    assert not (out / "onnx").exists() and not (out / "hyps").exists()
    cfg = compose(
        "evaluate",
        _overrides(prepared_data_dir, tmp_path / "bare", student_kd=student)
        + ["subsets=test", "chunk_sizes_ms=320", "runtime=torch", "full_context=false"],
    )
    given = OmegaConf.to_container(cfg)
    rows = evaluate(cfg)["rows"]
    assert [(r["subset"], r["mode"]) for r in rows] == [("test", "stream-320ms")]
    assert OmegaConf.to_container(cfg) == given  # settings are read from it, never written to it
    cfg = compose(  # a repeated entry is one row, not two identical ones
        "evaluate",
        _overrides(prepared_data_dir, tmp_path / "twice", student_kd=student)
        + [
            "subsets=[test,test]",
            "chunk_sizes_ms=[320,320]",
            "runtime=torch",
            "full_context=false",
        ],
    )
    rows = evaluate(cfg)["rows"]
    assert [(r["subset"], r["mode"]) for r in rows] == [("test", "stream-320ms")]


@pytest.fixture(scope="module")
def evaluated_beam(tmp_path_factory, evaluated, evaluated_torch, prepared_data_dir):
    """``evaluated_torch``'s run with decoding=[greedy,beam,beam_lm], the LM a trigram of the
    training transcripts."""
    from asr_kd.inference.lm import build_arpa, subset_texts

    cfg, _ = evaluated
    out = tmp_path_factory.mktemp("evaluate_beam")
    build_arpa(subset_texts(prepared_data_dir, ["train"]), out / "lm.arpa", order=3)
    overrides = _overrides(prepared_data_dir, out / "run", student_kd=cfg.ckpt.student_kd)
    overrides += ["runtime=torch", "chunk_sizes_ms=[320]", "plots=false"]
    overrides += ["decoding=[greedy,beam,beam_lm]", f"beam.lm={out / 'lm.arpa'}"]
    overrides += [f"beam.cache_dir={out / 'cache'}", "beam.size=8"]
    cfg_beam = compose("evaluate", overrides)
    return cfg_beam, evaluate(cfg_beam)


def test_beam_decodings_add_rows_and_leave_the_greedy_rows_as_they_were(
    evaluated, evaluated_torch, evaluated_beam
):
    (cfg_beam, beam), (cfg_greedy, greedy, _) = evaluated_beam, evaluated_torch
    assert [(r["mode"], r.get("decoding")) for r in beam["rows"]] == [
        ("full", None),
        ("stream-320ms", None),
        ("full-beam", "beam"),
        ("stream-320ms-beam", "beam"),
        ("full-beam_lm", "beam_lm"),
        ("stream-320ms-beam_lm", "beam_lm"),
    ]
    skip = {"rtf", "rtf_batch", "cpu_s_per_audio_h"}  # timings differ from run to run
    for before, after in zip(greedy["rows"], beam["rows"][:2], strict=True):
        assert {k: v for k, v in before.items() if k not in skip} == {
            k: v for k, v in after.items() if k not in skip
        }
    for mode in ("full", "stream-320ms"):
        assert _read_hyps(cfg_greedy.out_dir + f"/hyps/student_kd.test.{mode}.tsv") == _read_hyps(
            cfg_beam.out_dir + f"/hyps/student_kd.test.{mode}.tsv"
        )
    words = set((Path(cfg_beam.beam.lm)).read_text().split())  # every token of the ARPA file
    lm_hyps = _read_hyps(cfg_beam.out_dir + "/hyps/student_kd.test.full-beam_lm.tsv")
    assert set(" ".join(r["hypothesis"] for r in lm_hyps.values()).split()) <= words
    assert beam["meta"]["beam"]["lm"] == cfg_beam.beam.lm and beam["meta"]["beam"]["size"] == 8
    assert "beam" not in greedy["meta"] and "beam" not in evaluated[1]["meta"]
    assert "(beam_lm)" in (Path(cfg_beam.out_dir) / "results.md").read_text()


def test_an_unknown_decoding_or_a_missing_lm_fails_before_decoding(tmp_path, evaluated):
    from asr_kd.errors import ConfigError, MissingFileError

    cfg, _ = evaluated
    overrides = _overrides(cfg.data.dir, tmp_path / "out", student_kd=cfg.ckpt.student_kd)
    with pytest.raises(ConfigError, match=r"decoding must list distinct entries of .*beam_serch"):
        evaluate(compose("evaluate", [*overrides, "decoding=[greedy,beam_serch]"]))
    missing = [*overrides, "runtime=torch", "decoding=[beam_lm]", f"beam.lm={tmp_path}/no.arpa"]
    with pytest.raises(MissingFileError, match="language model not found: .*no.arpa"):
        evaluate(compose("evaluate", missing))
    assert not (tmp_path / "out" / "results.json").exists()


def test_hotword_figures_beside_every_row_of_a_run_with_hotwords(
    tmp_path, evaluated, prepared_data_dir
):
    """decoding=[beam_lm,beam_lm_hotwords] beam.hotwords=FILE: both sets of rows get recall,
    false hotwords and the WER without hotwords, those of their hypotheses files; results.md
    gets the hotword table."""
    from asr_kd.inference.hotwords import pick_hotwords, write_hotwords
    from asr_kd.inference.lm import build_arpa, subset_texts
    from asr_kd.metrics import hotword_scores

    cfg, _ = evaluated
    build_arpa(subset_texts(prepared_data_dir, ["train"]), tmp_path / "lm.arpa", order=2)
    test, train = (
        subset_texts(prepared_data_dir, ["test"]),
        subset_texts(prepared_data_dir, ["train"]),
    )
    words = [w for w, _, _ in pick_hotwords(test, train, 10**6, min_chars=3, limit=3)]
    write_hotwords(tmp_path / "hot.txt", words)
    overrides = _overrides(prepared_data_dir, tmp_path / "run", student_kd=cfg.ckpt.student_kd)
    overrides += ["runtime=torch", "chunk_sizes_ms=[320]", "plots=false", "full_context=false"]
    overrides += ["decoding=[beam_lm,beam_lm_hotwords]", f"beam.lm={tmp_path / 'lm.arpa'}"]
    overrides += [f"beam.hotwords={tmp_path / 'hot.txt'}", "beam.size=4", "beam.hotword_boost=8"]
    overrides += [f"beam.cache_dir={tmp_path / 'cache'}"]
    run = compose("evaluate", overrides)
    rows = evaluate(run)["rows"]
    assert [r["mode"] for r in rows] == ["stream-320ms-beam_lm", "stream-320ms-beam_lm_hotwords"]
    for row in rows:
        hyps = _read_hyps(f"{run.out_dir}/hyps/student_kd.test.{row['mode']}.tsv")
        refs = [h["reference"] for h in hyps.values()]
        expected = hotword_scores(refs, [h["hypothesis"] for h in hyps.values()], words)
        assert {k: row[k] for k in expected} == expected and row["hotword_refs"] > 0
    assert "| Hotword recall % |" in (Path(run.out_dir) / "results.md").read_text()
