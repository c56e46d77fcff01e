"""Torch greedy CTC decoders: offline, streaming (== offline with the same chunk mask), the
token stream shared with ONNX Runtime, and feeding features in chunks."""

import pytest
import torch

from asr_kd.inference.decoders import StreamingGreedyDecoder, decode_offline, feed_chunks
from asr_kd.models.decode import greedy_ctc


class CharTokenizer:
    """Stand-in for asr_kd.data.tokenizer.Tokenizer: blank 0, then ' ', then A..."""

    blank_id = 0
    symbols = "_ ABCDEFGHIJKLMNOPQRSTUVWXYZ"

    def decode(self, ids):
        return "".join(self.symbols[i] for i in ids)


def chatty(tiny, streaming=True):
    """A random model whose argmax changes often (scaled CTC head), V=28."""
    model = tiny(streaming=streaming, vocab_size=28)
    with torch.no_grad():
        model.ctc.weight.mul_(20.0)
    return model


@pytest.mark.parametrize("chunk_size, left_chunks", [(1, 2), (4, -1), (8, 4)])
def test_streaming_decoder_final_text_equals_offline(chunk_size, left_chunks, tiny):
    model, tok = chatty(tiny), CharTokenizer()
    feats = torch.randn(1, 333, 80)
    log_probs, out_lens = model(feats, torch.tensor([333]), chunk_size, left_chunks)
    offline = tok.decode(greedy_ctc(log_probs, out_lens)[0])
    assert len(offline) > 10  # not a trivial all-blank hypothesis

    decoder = StreamingGreedyDecoder(model, tok, chunk_size, left_chunks)
    partials = [decoder.accept(feats[0, i : i + 13]) for i in range(0, 333, 13)]
    final = decoder.finalize()
    assert final == offline
    for before, after in zip(partials, partials[1:] + [final], strict=True):
        assert after.startswith(before)  # greedy partials only grow
    decoder.reset()  # a new utterance: one big piece, same result
    decoder.accept(feats)
    assert decoder.finalize() == offline


@pytest.mark.parametrize("streaming", [False, True])
def test_offline_decoder_is_greedy_search_of_the_full_context_forward(streaming, tiny):
    """A streaming model decoded offline gets full context, not its training chunk mask."""
    model, tok = chatty(tiny, streaming=streaming), CharTokenizer()
    feats = torch.randn(333, 80)
    log_probs, out_lens = model(feats[None], torch.tensor([333]))
    expected = tok.decode(greedy_ctc(log_probs, out_lens)[0])
    assert len(expected) > 10  # not a trivial all-blank hypothesis
    assert decode_offline(model, tok, feats) == expected
    assert decode_offline(model, tok, feats.numpy()) == expected  # numpy features too
    if streaming:  # a chunk mask would have shown
        chunked, lens = model(feats[None], torch.tensor([333]), 1, 0)
        assert tok.decode(greedy_ctc(chunked, lens)[0]) != expected


def test_docstring_examples_and_the_shared_token_stream():
    import doctest

    import numpy as np

    from asr_kd.inference import decoders, search
    from asr_kd.models import decode

    assert doctest.testmod(decoders).failed == 0
    stream = search.GreedyTokenStream(CharTokenizer())
    ids = np.array([5, 5, 0, 5, 6, 6, 0, 0, 7])
    for piece in np.split(ids, [1, 2, 5, 5, 8]):  # a repeat split across pieces, empty pieces
        stream.extend_ids(piece)
    assert stream.token_ids == decode.collapse_ids(ids) == [5, 5, 6, 7]


class _RecordingDecoder:
    def __init__(self):
        self.fed, self.finalized = [], False

    def push(self, feats):
        self.fed.append(tuple(feats.shape))

    def accept(self, feats):
        self.push(feats)
        return f"p{len(self.fed)}"

    def finalize(self):
        self.finalized = True
        return "final"


def test_feed_chunks_feeds_one_chunk_per_accept_and_reports_partials():
    decoder, partials = _RecordingDecoder(), []
    text = feed_chunks(decoder, torch.zeros(10, 3), 4, lambda n, t: partials.append((n, t)))
    assert decoder.fed == [(4, 3), (4, 3), (2, 3)] and decoder.finalized and text == "final"
    assert partials == [(4, "p1"), (8, "p2"), (10, "p3")]
    quiet = _RecordingDecoder()
    assert feed_chunks(quiet, torch.zeros(10, 3), 4) == "final" and len(quiet.fed) == 3
    with pytest.raises(ValueError, match="frames, channels"):  # (1, T, F) would be one chunk
        feed_chunks(_RecordingDecoder(), torch.zeros(1, 10, 3), 4)
