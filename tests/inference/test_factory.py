"""make_decoder: torch and ONNX Runtime, offline and streaming, one decoder per model and mode;
open_graph for the log-prob level. A tiny untrained checkpoint on utterances of the tiny corpus."""

from __future__ import annotations

import pytest
import torch

from asr_kd.data.datamodule import AsrDataModule
from asr_kd.errors import ConfigError, MissingFileError
from asr_kd.export.onnx import export_checkpoint
from asr_kd.inference import decoders, onnx
from asr_kd.inference.factory import graph_path, make_decoder, open_graph
from asr_kd.inference.timing import utterances
from asr_kd.models.decode import greedy_ctc
from asr_kd.models.loading import load_model


@pytest.fixture(scope="module")
def student(tmp_path_factory, make_checkpoint):
    """The tiny streaming student (left_chunks 2 by default) and its export: full.onnx,
    stream-c4-l2.onnx, stream-c8-l2.onnx."""
    root = tmp_path_factory.mktemp("factory")
    loaded = load_model(make_checkpoint(root / "student.ckpt", streaming=True))
    export_checkpoint(loaded, root / "onnx", chunk_sizes=[4, 8])
    return loaded, root / "onnx"


@pytest.fixture(scope="module")
def utts(prepared_data_dir):
    """Three test utterances, (T, 80) raw fbank each."""
    batches = AsrDataModule(prepared_data_dir, num_workers=0).dataloader("test", shuffle=False)
    return [utt for utt, _ in zip(utterances(batches), range(3), strict=False)]


def _reference(loaded, feats, chunk_size):
    """Greedy text of the full forward, with the chunk mask of ``chunk_size`` (None: full)."""
    left = loaded.model.default_left_chunks if chunk_size else -1
    with torch.inference_mode():
        lp, lens = loaded.model(feats[None], torch.tensor([feats.shape[0]]), chunk_size, left)
    return loaded.tokenizer.decode(greedy_ctc(lp, lens)[0])


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
@pytest.mark.parametrize("chunk_size", [None, 4, 8], ids=["offline", "c4", "c8"])
def test_every_decoder_gives_the_text_of_the_masked_forward(student, utts, runtime, chunk_size):
    """One decoder serves several utterances (reset per call), numpy or torch features."""
    loaded, onnx_dir = student
    decode = make_decoder(
        runtime, loaded=loaded, onnx=onnx_dir, chunk_size=chunk_size, left_chunks=2
    )
    assert (decode.runtime, decode.streaming, decode.chunk_size) == (
        runtime,
        chunk_size is not None,
        chunk_size,
    )
    expected = [_reference(loaded, utt.feats, chunk_size) for utt in utts]
    assert all(expected), "an all-blank model would make this test vacuous"
    assert [decode(utt.feats) for utt in utts] == expected
    assert [decode(utt.feats.numpy()) for utt in reversed(utts)] == expected[::-1]


def test_streaming_partials_are_the_same_in_both_runtimes_and_grow(student, utts):
    loaded, onnx_dir = student
    seen = {}
    for runtime in ("torch", "onnx"):
        decode = make_decoder(runtime, loaded=loaded, onnx=onnx_dir, chunk_size=8, left_chunks=2)
        partials = []
        final = decode(utts[0].feats, lambda frames, text, got=partials: got.append((frames, text)))
        seen[runtime] = partials, final
    partials, final = seen["torch"]
    assert seen["onnx"] == seen["torch"]
    frames = utts[0].feats.shape[0]
    assert [n for n, _ in partials] == [min(s + 32, frames) for s in range(0, frames, 32)]
    assert any(text for _, text in partials[:-1]), "no non-empty early partial"
    texts = [text for _, text in partials] + [final]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_streaming_feeds_the_model_one_chunk_at_a_time(student, utts, runtime, monkeypatch):
    """Regression: evaluate's runtime=torch handed the whole (1, T, F) utterance to one accept()
    call, so its streaming RTF was not that of a live feed."""
    loaded, onnx_dir = student
    owner = decoders.StreamingGreedyDecoder if runtime == "torch" else onnx.OnnxStreamingDecoder
    sizes, push = [], owner.push  # accept when partials are asked for: push, then the text

    def recording_push(self, feats):
        sizes.append(feats.shape[-2])
        return push(self, feats)

    monkeypatch.setattr(owner, "push", recording_push)
    decode = make_decoder(runtime, loaded=loaded, onnx=onnx_dir, chunk_size=8, left_chunks=2)
    feats = utts[0].feats
    decode(feats)
    step = 8 * loaded.model.subsampling_factor
    assert len(sizes) == -(-feats.shape[0] // step) > 1 and max(sizes) == step


def test_streaming_decoder_can_be_driven_by_hand(student, utts):
    """accept piece by piece, finalize (which decodes the buffered tail), reset, next one."""
    loaded, onnx_dir = student
    for runtime in ("torch", "onnx"):
        decode = make_decoder(runtime, loaded=loaded, onnx=onnx_dir, chunk_size=4, left_chunks=2)
        tail_mattered = False
        for utt in utts:
            decode.reset()
            for start in range(0, utt.feats.shape[0], 7):  # pieces that cut chunks anywhere
                partial = decode.accept(utt.feats[start : start + 7])
            final = decode.finalize()
            assert final == _reference(loaded, utt.feats, 4), (runtime, utt.cut_id)
            tail_mattered |= final != partial
        assert tail_mattered, "no utterance's tail added a token: finalize untested"


def test_graph_files_and_directories(student, tmp_path):
    loaded, onnx_dir = student
    assert graph_path(onnx_dir, None, None) == onnx_dir / "full.onnx"
    assert graph_path(onnx_dir, 8, 2) == onnx_dir / "stream-c8-l2.onnx"
    assert graph_path(onnx_dir / "stream-c4-l2.onnx", 8, 5) == onnx_dir / "stream-c4-l2.onnx"
    with pytest.raises(ConfigError, match=r"give left_chunks .*stream-c4-l2.onnx"):
        graph_path(onnx_dir, 8, None)
    step = make_decoder("onnx", onnx=onnx_dir / "stream-c8-l2.onnx", chunk_size=8)
    assert (step.chunk_size, step.left_chunks) == (8, 2)  # the graph's own left context
    with pytest.raises(ConfigError, match=r"chunk_size 8, left_chunks 2 .* chunk_size 4"):
        make_decoder("onnx", onnx=onnx_dir / "stream-c8-l2.onnx", chunk_size=4)
    with pytest.raises(ConfigError, match=r"left_chunks 2 .* left_chunks 3"):
        make_decoder("onnx", onnx=onnx_dir / "stream-c8-l2.onnx", chunk_size=8, left_chunks=3)
    with pytest.raises(MissingFileError, match="stream-c8-l3.onnx"):
        make_decoder("onnx", onnx=onnx_dir, chunk_size=8, left_chunks=3)
    with pytest.raises(MissingFileError, match="absent.onnx"):
        open_graph(tmp_path / "absent.onnx", streaming=False)
    runner = open_graph(onnx_dir / "stream-c4-l2.onnx", streaming=True)
    assert (runner.chunk_size, runner.left_chunks) == (4, 2)
    full = open_graph(onnx_dir / "full.onnx", streaming=False)
    assert full.log_probs(torch.zeros(40, 80)).shape == (10, loaded.model.vocab_size)


def test_bad_requests_are_config_errors(student, make_checkpoint, tmp_path):
    loaded, onnx_dir = student
    with pytest.raises(ConfigError, match="runtime must be one of .* got 'tensorrt'"):
        make_decoder("tensorrt", loaded=loaded, onnx=onnx_dir)
    teacher = load_model(make_checkpoint(tmp_path / "teacher.ckpt", streaming=False))
    with pytest.raises(ConfigError, match="teacher.ckpt holds a full-context model"):
        make_decoder("torch", loaded=teacher, chunk_size=8)
    with pytest.raises(TypeError, match="needs loaded="):
        make_decoder("torch", onnx=onnx_dir)
    with pytest.raises(TypeError, match="needs onnx="):
        make_decoder("onnx", loaded=loaded)
