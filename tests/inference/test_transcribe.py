"""asr-kd-transcribe on generated audio at 22.05 kHz (WAV and FLAC), offline and streaming,
with a torch checkpoint and with the ONNX graphs asr-kd-export writes."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_kd.cli.transcribe import main
from asr_kd.data.features import compute_fbank
from asr_kd.export.onnx import export_checkpoint
from asr_kd.models.decode import greedy_ctc
from asr_kd.models.loading import load_model

SR = 22050


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    """1.3 s of a chirp plus noise at 22.05 kHz, as WAV, FLAC and MP3; and an unreadable 'FLAC'."""
    root = tmp_path_factory.mktemp("audio")
    t = np.arange(int(1.3 * SR)) / SR
    rng = np.random.default_rng(0)
    wave = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) + 0.05 * rng.standard_normal(t.size)
    wav, flac, bad = root / "chirp.wav", root / "chirp.flac", root / "broken.flac"
    sf.write(wav, wave.astype(np.float32), SR)
    sf.write(flac, wave.astype(np.float32), SR)
    sf.write(root / "chirp.mp3", wave.astype(np.float32), SR)
    bad.write_bytes(b"this is not audio")
    return wav, flac, bad, wave.astype(np.float32)


@pytest.fixture(scope="module")
def student_ckpt(tmp_path_factory, make_checkpoint):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.ckpt", streaming=True)


def _expected(ckpt, wave, chunk_size=None):
    loaded = load_model(ckpt)
    feats = compute_fbank(wave, SR).unsqueeze(0)
    left = loaded.model.default_left_chunks if chunk_size else -1
    with torch.inference_mode():
        lp, lens = loaded.model(feats, torch.tensor([feats.shape[1]]), chunk_size, left)
    return loaded.tokenizer.decode(greedy_ctc(lp, lens)[0]), feats.shape[1]


def test_one_file_prints_just_its_transcript(audio_files, student_ckpt, capsys):
    wav, _, _, wave = audio_files
    assert main(["--ckpt", str(student_ckpt), str(wav)]) == 0
    text, _ = _expected(student_ckpt, wave)
    assert text, "an all-blank model would make this test vacuous"
    assert capsys.readouterr().out == text + "\n"


def test_several_files_print_file_tab_text(audio_files, student_ckpt, capsys):
    wav, flac, _, wave = audio_files
    mp3 = wav.with_suffix(".mp3")
    assert main(["--ckpt", str(student_ckpt), str(wav), str(flac), str(mp3)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(wav), str(flac), str(mp3)]
    # FLAC is lossless: both files hold the same samples, so the same transcript.
    assert lines[0].split("\t")[1] == lines[1].split("\t")[1]


def test_streaming_prints_partials_and_final_equals_chunked_forward(
    audio_files, student_ckpt, capsys
):
    _, flac, _, wave = audio_files
    args = ["--ckpt", str(student_ckpt), "--streaming", "--chunk-ms", "320", str(flac)]
    assert main(args) == 0
    captured = capsys.readouterr()
    text, num_frames = _expected(student_ckpt, wave, chunk_size=8)
    assert captured.out == text + "\n"
    partials = [line for line in captured.err.splitlines() if line.startswith(f"[{flac} ")]
    assert len(partials) == -(-num_frames // 32)  # one per 320 ms (32 fbank frames) chunk
    assert partials[-1].startswith(f"[{flac} {num_frames / 100:.2f}s]")  # all audio fed


def test_unreadable_file_is_named_and_others_still_transcribed(audio_files, student_ckpt):
    wav, _, bad, _ = audio_files
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "asr_kd.cli.transcribe",
            "--ckpt",
            str(student_ckpt),
            str(bad),
            str(wav),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert str(bad) in proc.stderr
    assert proc.stdout.startswith(f"{wav}\t")


def test_bad_chunk_and_full_context_streaming_are_refused(
    audio_files, student_ckpt, make_checkpoint, tmp_path, capsys
):
    wav = str(audio_files[0])
    assert main(["--ckpt", str(student_ckpt), "--streaming", "--chunk-ms", "100", wav]) == 2
    assert "--chunk-ms 100" in capsys.readouterr().err
    teacher = make_checkpoint(tmp_path / "teacher.ckpt", streaming=False)
    assert main(["--ckpt", str(teacher), "--streaming", wav]) == 2
    assert "full-context" in capsys.readouterr().err
    assert main(["--ckpt", str(tmp_path / "absent.ckpt"), wav]) == 2


# ---------------------------------------------------------------------------- --onnx
@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, student_ckpt):
    """``asr-kd-export`` of the student: full.onnx, stream-c4-l2.onnx (160 ms), stream-c8-l2.onnx
    (320 ms); left_chunks 2 is the student's default."""
    out = tmp_path_factory.mktemp("onnx")
    paths = export_checkpoint(load_model(student_ckpt), out, chunk_sizes=[4, 8])
    assert sorted(p.name for p in paths.values()) == [
        "full.onnx",
        "stream-c4-l2.onnx",
        "stream-c8-l2.onnx",
    ]
    return out


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("graph", ["full.onnx", ""], ids=["file", "directory"])
def test_onnx_offline_prints_the_checkpoint_transcript(
    audio_files, student_ckpt, onnx_dir, capsys, graph
):
    wav, flac, _, wave = audio_files
    text, _ = _expected(student_ckpt, wave)
    assert text, "an all-blank model would make this test vacuous"
    assert _run(capsys, "--onnx", onnx_dir / graph, wav) == (0, text + "\n", "")
    code, out, _ = _run(capsys, "--onnx", onnx_dir / graph, wav, flac)
    assert (code, out) == (0, f"{wav}\t{text}\n{flac}\t{text}\n")


@pytest.mark.parametrize(
    ("graph", "chunk_args"),
    [
        ("", ["--chunk-ms", "320"]),
        ("", ["--chunk-ms", "160"]),
        ("stream-c8-l2.onnx", []),  # one step graph: --chunk-ms defaults to its chunk
        ("stream-c4-l2.onnx", ["--chunk-ms", "160", "--left-chunks", "2"]),
    ],
    ids=["dir-320", "dir-160", "file-default-chunk", "file-160-left-2"],
)
def test_onnx_streaming_prints_what_the_checkpoint_prints(
    audio_files, student_ckpt, onnx_dir, capsys, graph, chunk_args
):
    """Same final transcript on stdout and the same partial lines on stderr, chunk for chunk."""
    wav, flac, _, _ = audio_files
    chunk_ms = "320" if not chunk_args else chunk_args[1]
    torch_run = _run(capsys, "--ckpt", student_ckpt, "--streaming", "--chunk-ms", chunk_ms, wav)
    assert torch_run[0] == 0 and torch_run[1].strip(), "an all-blank model makes this vacuous"
    partials = torch_run[2].splitlines()
    assert len(partials) == (5 if chunk_ms == "320" else 9)  # 1.3 s: one per chunk
    assert any(line.split("] ", 1)[1] for line in partials[:-1]), "no non-empty early partial"
    onnx_run = _run(capsys, "--onnx", onnx_dir / graph, "--streaming", *chunk_args, wav)
    assert onnx_run == torch_run
    # Several files: the decoder (one ORT session) is reset between them.
    torch_two = _run(
        capsys, "--ckpt", student_ckpt, "--streaming", "--chunk-ms", chunk_ms, wav, flac
    )
    onnx_two = _run(capsys, "--onnx", onnx_dir / graph, "--streaming", *chunk_args, wav, flac)
    assert onnx_two == torch_two


def test_exactly_one_of_ckpt_and_onnx(audio_files, student_ckpt, onnx_dir, capsys):
    wav = audio_files[0]
    with pytest.raises(SystemExit) as exit_info:
        main([str(wav)])
    assert exit_info.value.code == 2
    assert "one of the arguments --ckpt --onnx is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(student_ckpt), "--onnx", str(onnx_dir), str(wav)])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_onnx_graph_of_the_wrong_kind_is_refused_naming_it(audio_files, onnx_dir, capsys):
    wav, full, step = audio_files[0], onnx_dir / "full.onnx", onnx_dir / "stream-c8-l2.onnx"
    code, out, err = _run(capsys, "--onnx", full, "--streaming", wav)
    assert (code, out) == (2, "") and f"{full} is a full-context graph" in err
    code, out, err = _run(capsys, "--onnx", step, wav)
    assert (code, out) == (2, "") and f"{step} is a streaming step graph" in err
    only_full = onnx_dir.parent / "only_full"
    only_full.mkdir(exist_ok=True)
    shutil.copy(full, only_full / "full.onnx")
    code, _, err = _run(capsys, "--onnx", only_full, "--streaming", wav)
    assert code == 2 and f"{only_full} holds no streaming step graph" in err
    only_step = onnx_dir.parent / "only_step"
    only_step.mkdir(exist_ok=True)
    shutil.copy(step, only_step / step.name)
    code, _, err = _run(capsys, "--onnx", only_step, wav)
    assert code == 2 and f"{only_step} holds no full.onnx" in err


def test_onnx_chunk_and_left_chunks_are_fixed_by_the_graph(audio_files, onnx_dir, capsys):
    wav, step = audio_files[0], onnx_dir / "stream-c8-l2.onnx"
    code, out, err = _run(capsys, "--onnx", onnx_dir, "--streaming", "--chunk-ms", "640", wav)
    assert (code, out) == (2, "") and "--chunk-ms 640" in err and str(onnx_dir) in err
    assert "stream-c4-l2.onnx (160 ms" in err and "stream-c8-l2.onnx (320 ms" in err
    code, _, err = _run(capsys, "--onnx", step, "--streaming", "--chunk-ms", "160", wav)
    assert code == 2 and f"--chunk-ms 160 does not match {step}" in err and "320 ms" in err
    code, _, err = _run(capsys, "--onnx", step, "--streaming", "--left-chunks", "3", wav)
    assert code == 2 and f"--left-chunks 3 does not match {step}" in err
    assert "left_chunks 2" in err
    code, _, err = _run(capsys, "--onnx", onnx_dir, "--streaming", "--left-chunks", "-1", wav)
    assert code == 2 and "--left-chunks -1" in err


def test_unreadable_onnx_graph_is_refused(audio_files, tmp_path, capsys):
    wav, bad = audio_files[0], tmp_path / "full.onnx"
    bad.write_bytes(b"not a graph")
    code, out, err = _run(capsys, "--onnx", bad, wav)
    assert (code, out) == (2, "") and f"cannot load ONNX graph {bad}" in err
    code, _, err = _run(capsys, "--onnx", tmp_path / "absent.onnx", "--streaming", wav)
    assert code == 2 and "absent.onnx" in err


def test_audio_that_cannot_be_decoded_is_named_with_a_plain_reason(
    audio_files, student_ckpt, tmp_path, capsys
):
    """Regression: audio under 10 ms failed inside lhotse's fbank with torch's tensor errors, a
    NaN sample gave an empty transcript and exit status 0, and a missing file or a directory
    was libsndfile's 'System error.' / 'Format not recognised.'."""
    wav, _, _, wave = audio_files
    short, nan = tmp_path / "short.wav", tmp_path / "nan.wav"
    sf.write(short, wave[: SR // 200], SR)  # 5 ms
    broken = wave.copy()
    broken[100] = np.nan
    sf.write(nan, broken, SR, subtype="FLOAT")
    bad = [short, nan, tmp_path / "absent.wav", tmp_path]
    code, out, err = _run(capsys, "--ckpt", student_ckpt, *bad, wav)
    assert code == 1 and out.startswith(f"{wav}\t") and out.count("\n") == 1
    reasons = dict(line.split(": ", 1)[1].split(": ", 1) for line in err.splitlines())
    assert reasons == {
        f"cannot transcribe {short}": "audio too short: 5.0 ms, fbank needs at least 10 ms",
        f"cannot transcribe {nan}": f"cannot read audio {nan}: it holds NaN or infinite samples",
        f"cannot transcribe {tmp_path / 'absent.wav'}": (
            f"cannot read audio {tmp_path / 'absent.wav'}: no such file"
        ),
        f"cannot transcribe {tmp_path}": f"cannot read audio {tmp_path}: is a directory",
    }


def test_a_file_that_is_not_a_checkpoint_and_bad_options_are_refused(
    audio_files, student_ckpt, capsys
):
    """Regression: --ckpt on a non-torch file died with torch.load's IndexError traceback;
    --left-chunks -5 failed every file (status 1) instead of being refused; --threads 0 was
    torch's RuntimeError traceback."""
    wav = audio_files[0]
    code, out, err = _run(capsys, "--ckpt", wav, wav)
    assert (code, out) == (2, "")
    assert f"cannot read {wav} as a torch checkpoint (IndexError" in err
    code, out, err = _run(capsys, "--ckpt", student_ckpt, "--streaming", "--left-chunks", -5, wav)
    assert (code, out) == (2, "") and "--left-chunks -5: must be >= 0" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(student_ckpt), "--threads", "0", str(wav)])
    assert exit_info.value.code == 2
    assert "--threads: must be a positive integer" in capsys.readouterr().err


def test_refusals_are_user_errors_of_the_fitting_kind(audio_files, onnx_dir, tmp_path):
    """A command shows an ``asr_kd.errors.UserError`` as one ``error:`` line (status 2): a
    missing file is a MissingFileError, an unreadable one a BadFileError, a request the model
    or graph cannot serve a ConfigError (``Refused``), all before any audio is read."""
    from argparse import Namespace

    from asr_kd.errors import BadFileError, ConfigError, MissingFileError
    from asr_kd.inference.transcribe import Refused, onnx_decode, torch_decode

    def args(**given):
        defaults = dict(ckpt=None, onnx=None, streaming=False, chunk_ms=None, left_chunks=None)
        return Namespace(**{**defaults, "threads": 1, **given})

    with pytest.raises(MissingFileError, match="absent.ckpt"):
        torch_decode(args(ckpt=tmp_path / "absent.ckpt"))
    with pytest.raises(BadFileError, match="as a torch checkpoint"):
        torch_decode(args(ckpt=audio_files[0]))
    bad = tmp_path / "full.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(BadFileError, match="cannot load ONNX graph"):
        onnx_decode(args(onnx=bad))
    with pytest.raises(MissingFileError, match="absent.onnx"):
        onnx_decode(args(onnx=tmp_path / "absent.onnx", streaming=True))
    with pytest.raises(Refused, match="--chunk-ms 640"):
        onnx_decode(args(onnx=onnx_dir, streaming=True, chunk_ms=640))
    assert issubclass(Refused, ConfigError)


def test_beam_lm_decoding_prints_the_same_text_through_torch_and_onnx(
    audio_files, student_ckpt, onnx_dir, tmp_path, capsys, monkeypatch
):
    """--decoding beam_lm with a lexicon of words the random model never spells: every printed
    word is a lexicon word; torch and ONNX Runtime print the same, streaming and offline."""
    from asr_kd.inference.lm import build_arpa

    monkeypatch.setenv("HOME", str(tmp_path))  # the LM cache (~/.cache/asr_kd/lm) of this test
    wav, _, _, _ = audio_files
    build_arpa(["A B C", "B C D", "E A"], tmp_path / "lm.arpa", order=2)
    search = ["--decoding", "beam_lm", "--lm", str(tmp_path / "lm.arpa"), "--lm-weight", "0.1"]
    printed = []
    for model in (["--ckpt", str(student_ckpt)], ["--onnx", str(onnx_dir)]):
        for streaming in ([], ["--streaming", "--chunk-ms", "320"]):
            assert main([*model, *streaming, *search, str(wav)]) == 0
            printed.append(capsys.readouterr().out)
    assert printed[0] == printed[2] and printed[1] == printed[3]
    assert all(p.strip() for p in printed), "an empty transcript would make this vacuous"
    assert set(" ".join(printed).split()) <= {"A", "B", "C", "D", "E"}
    assert main(["--ckpt", str(student_ckpt), "--decoding", "beam_lm", str(wav)]) == 2
    assert "decoding beam_lm needs a lexicon" in capsys.readouterr().err


def test_hotwords_bias_the_beam_and_need_one(
    audio_files, student_ckpt, tmp_path, capsys, monkeypatch
):
    """--hotwords turns beam_lm into beam_lm_hotwords: a hotword absent from the LM joins the
    lexicon and, boosted hard, is printed; greedy has no beam to bias: one error line, status 2."""
    from asr_kd.inference.lm import build_arpa

    monkeypatch.setenv("HOME", str(tmp_path))  # the LM cache (~/.cache/asr_kd/lm) of this test
    wav, _, _, _ = audio_files
    build_arpa(["A B C", "B C D", "E A"], tmp_path / "lm.arpa", order=2)
    (tmp_path / "hot.txt").write_text("QQ\t40\n")
    search = ["--decoding", "beam_lm", "--lm", str(tmp_path / "lm.arpa"), "--lm-weight", "0.1"]
    search += ["--beam-size", "8"]
    assert main(["--ckpt", str(student_ckpt), *search, str(wav)]) == 0
    assert "QQ" not in capsys.readouterr().out.split()
    hot = ["--hotwords", str(tmp_path / "hot.txt")]
    assert main(["--ckpt", str(student_ckpt), *search, *hot, str(wav)]) == 0
    assert "QQ" in capsys.readouterr().out.split()
    assert main(["--ckpt", str(student_ckpt), *hot, str(wav)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: hotwords need a beam search") and err.count("\n") == 1
