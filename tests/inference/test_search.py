"""CTC searches (asr_kd.inference.search): beam search streams exactly as it decodes offline,
in torch and ONNX Runtime; a lexicon and a word LM repair spellings; char and BPE vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError
from asr_kd.export.onnx import export_step
from asr_kd.inference.decoders import StreamingGreedyDecoder, decode_offline
from asr_kd.inference.lm import build_arpa
from asr_kd.inference.onnx import OnnxStreamingCTC, OnnxStreamingDecoder
from asr_kd.inference.search import DECODINGS, BeamSettings, make_search, spell_lexicon
from tests.helpers.onnx_graphs import random_feats, tiny_loaded

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = ["THE CAT SAT ON THE MAT", "THE DOG SAT ON THE LOG", "A CAT AND A DOG", "THE DOG RAN"]


def _emissions(tokenizer, text: str, noise: float, seed: int = 1) -> torch.Tensor:
    """(T, V) log-probs spelling ``text`` (each token twice, then a blank), plus noise."""
    frames = [i for token in tokenizer.encode(text) for i in (token, token, 0)]
    log_probs = torch.full((len(frames), tokenizer.vocab_size), -8.0)
    log_probs[torch.arange(len(frames)), frames] = 0.0
    noisy = log_probs + noise * torch.randn(
        log_probs.shape, generator=torch.Generator().manual_seed(seed)
    )
    return noisy.log_softmax(-1)


@pytest.fixture
def arpa(tmp_path):
    build_arpa(TEXT, tmp_path / "lm.arpa", order=3)
    return tmp_path / "lm.arpa"


def _settings(tmp_path, **kw) -> BeamSettings:
    hotwords = tmp_path / "hotwords.txt"
    hotwords.write_text("CAT\nDOG\t5\n")
    return BeamSettings(cache_dir=str(tmp_path / "cache"), **{"hotwords": str(hotwords), **kw})


def test_a_lexicon_and_a_word_lm_repair_what_greedy_misspells(tmp_path, arpa):
    tok = Tokenizer.char()
    log_probs = _emissions(tok, "THE CAT SAT ON THE MAT", noise=3.0)
    greedy = make_search("greedy", tok).offline(log_probs)
    beam = make_search("beam", tok, _settings(tmp_path)).offline(log_probs)
    lm = make_search("beam_lm", tok, _settings(tmp_path, lm=str(arpa), lm_weight=1.0))
    assert greedy != "THE CAT SAT ON THE MAT"
    assert beam != "THE CAT SAT ON THE MAT"  # no LM, no lexicon: the spelling stays
    assert lm.offline(log_probs) == "THE CAT SAT ON THE MAT"
    assert lm.offline(log_probs.numpy()) == "THE CAT SAT ON THE MAT"  # numpy log-probs too


def test_the_lm_weight_picks_between_acoustics_and_the_lm(tmp_path, arpa):
    """Clean acoustics of A DOG SAT ON A MAT, a word sequence the LM never saw: the lexicon
    alone (weight 0) keeps it, an overweighted LM rewrites it."""
    tok = Tokenizer.char()
    log_probs = _emissions(tok, "A DOG SAT ON A MAT", noise=0.0)
    lexicon_only = make_search("beam_lm", tok, _settings(tmp_path, lm=str(arpa), lm_weight=0.0))
    assert lexicon_only.offline(log_probs) == "A DOG SAT ON A MAT"
    heavy = make_search("beam_lm", tok, _settings(tmp_path, lm=str(arpa), lm_weight=50.0))
    assert heavy.offline(log_probs) != "A DOG SAT ON A MAT"


@pytest.mark.parametrize(
    "decoding", ["greedy", "beam", "beam_lm", "beam_hotwords", "beam_lm_hotwords"]
)
def test_streaming_search_equals_offline_search_over_the_same_log_probs(
    decoding, tmp_path, arpa, tiny
):
    """The chunk-masked log-probs of a model, searched offline and fed chunk by chunk through
    the model's streaming path: one final transcript."""
    loaded = tiny_loaded(tiny, streaming=True)
    with torch.no_grad():
        loaded.model.ctc.weight.mul_(20.0)  # an argmax that changes often
    search = make_search(decoding, loaded.tokenizer, _settings(tmp_path, lm=str(arpa)))
    feats = random_feats(loaded, 403)
    with torch.inference_mode():
        log_probs, _ = loaded.model(feats[None], torch.tensor([403]), 4, 2)
    offline = search.offline(log_probs[0])
    assert len(offline) > 3  # not a trivial empty hypothesis
    decoder = StreamingGreedyDecoder(loaded.model, loaded.tokenizer, 4, 2, search)
    partials = [decoder.accept(feats[s : s + 37]) for s in range(0, 403, 37)]
    assert decoder.finalize() == offline
    assert partials[-1]  # a partial transcript while the utterance goes on
    decoder.reset()  # a second utterance through the same search
    decoder.accept(feats)
    assert decoder.finalize() == offline


@pytest.mark.parametrize("decoding", ["beam", "beam_lm", "beam_lm_hotwords"])
def test_onnx_runtime_and_torch_give_the_same_beam_transcripts(decoding, tmp_path, arpa, tiny):
    loaded = tiny_loaded(tiny, streaming=True)
    with torch.no_grad():
        loaded.model.ctc.weight.mul_(20.0)
    search = make_search(decoding, loaded.tokenizer, _settings(tmp_path, lm=str(arpa)))
    runner = OnnxStreamingCTC(export_step(loaded, tmp_path / "step.onnx", 4, 2))
    onnx_decoder = OnnxStreamingDecoder(runner, search=search)
    feats = random_feats(loaded, 403)
    for s in range(0, 403, 37):
        onnx_decoder.accept(feats[s : s + 37])
    onnx_text = onnx_decoder.finalize()
    torch_decoder = StreamingGreedyDecoder(loaded.model, loaded.tokenizer, 4, 2, search)
    for s in range(0, 403, 37):
        torch_decoder.accept(feats[s : s + 37])
    assert torch_decoder.finalize() == onnx_text
    assert decode_offline(loaded.model, loaded.tokenizer, feats, search) != ""


def test_bpe_words_are_spelled_with_the_tokenizers_pieces(tmp_path, arpa):
    """One-piece words (``▁CAT``) over two frames each: the repeat is not a second word, nor a
    frame the search must pay for (each spelling ends in the blank)."""
    bpe = Tokenizer.train_bpe(TEXT * 20, vocab_size=30)
    log_probs = _emissions(bpe, "THE CAT SAT ON THE MAT", noise=2.0, seed=3)
    lm = make_search("beam_lm", bpe, _settings(tmp_path, lm=str(arpa), lm_weight=1.0))
    assert lm.offline(log_probs) == "THE CAT SAT ON THE MAT"
    lines = spell_lexicon(["CAT", "ZEBRA9"], bpe)
    assert lines == [f"CAT {' '.join(bpe.symbols[i] for i in bpe.encode('CAT'))} <blk>\n"]


def test_a_librispeech_lexicon_is_respelled_and_limits_the_words(tmp_path):
    """The lexicon's phone spellings are dropped; its words alone can be output (no LM)."""
    lexicon = tmp_path / "librispeech-lexicon.txt"
    lexicon.write_text("THE\tDH AH0\nCAT\tK AE1 T\nCAP\tK AE1 P\nSAT\tS AE1 T\n")
    tok = Tokenizer.char()
    log_probs = _emissions(tok, "THE CAX SAT", noise=0.0)
    search = make_search("beam_lm", tok, _settings(tmp_path, lexicon=str(lexicon)))
    assert search.offline(log_probs) in ("THE CAT SAT", "THE CAP SAT")


def test_beam_lm_without_a_word_list_is_one_config_error(tmp_path):
    with pytest.raises(
        ConfigError, match=r"needs a lexicon \(beam.lexicon=FILE, --lexicon FILE\) or an ARPA"
    ):
        make_search("beam_lm", Tokenizer.char(), _settings(tmp_path))
    with pytest.raises(ConfigError, match=r"decoding must be one of .*got 'beam_search'"):
        make_search("beam_search", Tokenizer.char())
    assert sorted(DECODINGS) == [
        "beam",
        "beam_hotwords",
        "beam_lm",
        "beam_lm_hotwords",
        "greedy",
    ]


def test_empty_log_probs_decode_to_nothing(tmp_path, arpa):
    tok = Tokenizer.char()
    for decoding in DECODINGS:
        search = make_search(decoding, tok, _settings(tmp_path, lm=str(arpa)))
        assert search.offline(np.zeros((0, tok.vocab_size), np.float32)) == ""


@pytest.mark.parametrize("decoding", ["beam", "beam_lm"])
def test_pruned_history_keeps_the_transcript_of_a_long_stream(decoding, tmp_path, arpa):
    """prune_frames=30 on 60 words (~1000 frames) fed 8 frames at a time: the committed prefix
    and flashlight's pruned buffer join into the unpruned search's transcript."""
    tok = Tokenizer.char()
    text = " ".join(TEXT * 3)
    log_probs = _emissions(tok, text, noise=1.5, seed=5)
    results = []
    for prune_frames in (None, 30):
        search = make_search(
            decoding, tok, _settings(tmp_path, lm=str(arpa), prune_frames=prune_frames)
        )
        stream = search.stream()
        for start in range(0, log_probs.shape[0], 8):
            stream.extend(log_probs[start : start + 8])
        partial = stream.text
        results.append((partial, stream.finalize()))
    (partial, full), (pruned_partial, pruned) = results
    assert pruned == full and pruned_partial == partial
    assert decoding == "beam" or full == text
    assert len(search.decoder.decoder.get_best_hypothesis().tokens) < 200  # history dropped


@pytest.mark.parametrize("decoding", ["beam", "beam_lm"])
def test_a_streamed_chunk_reads_the_best_hypothesis_only_for_a_partial(decoding, tmp_path, arpa):
    """Regression: every accept traced flashlight's best hypothesis back to the first frame, so
    a chunk cost more the longer the utterance. Fed without partials the stream never traces it;
    with prune_frames each trace stays short however long the stream."""
    tok = Tokenizer.char()
    log_probs = _emissions(tok, " ".join(TEXT * 3), noise=1.5, seed=5)
    quiet = make_search(decoding, tok, _settings(tmp_path, lm=str(arpa))).stream()
    for start in range(0, log_probs.shape[0], 8):
        quiet.extend(log_probs[start : start + 8])
    assert quiet.reads == 0
    search = make_search(decoding, tok, _settings(tmp_path, lm=str(arpa), prune_frames=30))
    stream, traced, partials = search.stream(), [], []
    for start in range(0, log_probs.shape[0], 8):
        stream.extend(log_probs[start : start + 8])
        partials.append(stream.text)
        traced.append(len(search.decoder.decoder.get_best_hypothesis().tokens))
    assert stream.commits > 5 and max(traced) < 200 < log_probs.shape[0] and partials[-1]
    assert stream.reads == len(traced) + stream.commits
    assert stream.finalize() == quiet.finalize()


def _runner_up(tok, text: str, best: str, runner_up: str, gap: float) -> torch.Tensor:
    """Clean log-probs of ``text`` where the first token of ``best`` (on one frame, then
    blanks) has the first token of ``runner_up`` ``gap`` nats below it."""
    log_probs = _emissions(tok, text, noise=0.0)
    frames = [i for token in tok.encode(text) for i in (token, token, 0)]
    first, second = tok.encode(best)[0], tok.encode(runner_up)[0]
    t = frames.index(first)
    log_probs[t, second] = log_probs[t, first] - gap
    log_probs[t + 1] = log_probs[t + 2]  # a blank frame: no room for both tokens
    return log_probs.log_softmax(-1)


@pytest.mark.parametrize("decoding", ["beam", "beam_lm"])
def test_a_hotword_the_acoustics_rank_second_is_recognised_when_boosted(decoding, tmp_path, arpa):
    """KAT is the runner-up to CAT (1.5 nats on its first frames); beam_lm's lexicon lacks it.
    Unboosted, CAT; boosted, KAT, and only there: the rest of the sentence is unchanged."""
    tok = Tokenizer.char()
    log_probs = _runner_up(tok, "THE CAT SAT ON THE MAT", "CAT", "KAT", gap=1.5)
    (tmp_path / "kat.txt").write_text("KAT\n")
    plain = make_search(decoding, tok, _settings(tmp_path, lm=str(arpa), lm_weight=0.0))
    assert plain.offline(log_probs) == "THE CAT SAT ON THE MAT"
    boosted = make_search(
        f"{decoding}_hotwords",
        tok,
        _settings(tmp_path, lm=str(arpa), lm_weight=0.0, hotwords=str(tmp_path / "kat.txt")),
    )
    assert boosted.offline(log_probs) == "THE KAT SAT ON THE MAT"
    stream = boosted.stream()
    for start in range(0, log_probs.shape[0], 5):
        stream.extend(log_probs[start : start + 5])
    assert stream.finalize() == "THE KAT SAT ON THE MAT"  # streaming too
    (tmp_path / "weak.txt").write_text("KAT\t0.1\n")  # a per-word boost below the gap
    weak = make_search(
        f"{decoding}_hotwords",
        tok,
        _settings(tmp_path, lm=str(arpa), lm_weight=0.0, hotwords=str(tmp_path / "weak.txt")),
    )
    assert weak.offline(log_probs) == "THE CAT SAT ON THE MAT"


def test_hotword_searches_need_a_hotword_file(tmp_path):
    with pytest.raises(ConfigError, match=r"beam_hotwords needs a hotword file"):
        make_search("beam_hotwords", Tokenizer.char(), BeamSettings(cache_dir=str(tmp_path)))


def test_a_hotword_with_no_boost_changes_nothing(tmp_path, arpa):
    """The hotword LM hook with a zero bonus scores as flashlight's own KenLM does (the wrapper
    weighs the LM itself): the same transcript at an LM weight that keeps the acoustics and at
    one that rewrites them; without a lexicon, as the plain beam."""
    tok = Tokenizer.char()
    log_probs = _emissions(tok, "A DOG SAT ON A MAT", noise=0.5, seed=7)
    (tmp_path / "zero.txt").write_text("CAT\t0\nDOG\t0\n")
    texts = {}
    for decoding in ("beam", "beam_lm"):
        for lm_weight in (0.0, 50.0):
            kw = {"lm": str(arpa), "lm_weight": lm_weight, "word_score": 0.5, "size": 20}
            plain = make_search(decoding, tok, _settings(tmp_path, **kw)).offline(log_probs)
            hooked = make_search(
                f"{decoding}_hotwords",
                tok,
                _settings(tmp_path, hotwords=str(tmp_path / "zero.txt"), **kw),
            )
            assert hooked.offline(log_probs) == plain
            texts[decoding, lm_weight] = plain
    assert texts["beam_lm", 0.0] == "A DOG SAT ON A MAT" != texts["beam_lm", 50.0]
