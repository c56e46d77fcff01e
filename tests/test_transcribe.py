"""asr-kd-transcribe on generated audio at 22.05 kHz (WAV and FLAC), offline and streaming."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_kd.checkpoint import load_model
from asr_kd.data.features import compute_fbank
from asr_kd.models.decode import greedy_ctc
from asr_kd.transcribe import main

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
            "asr_kd.transcribe",
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
