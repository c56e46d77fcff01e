"""CTC decoders in torch: offline greedy (:func:`decode_offline`) and streaming with a partial
transcript per chunk, greedy or any search of :mod:`asr_kd.inference.search` (the ONNX Runtime
one is :class:`asr_kd.inference.onnx.OnnxStreamingDecoder`), and feeding audio in chunks.
:mod:`asr_kd.inference.factory` builds them (``make_decoder``).

Usage:
    text = decode_offline(model, tokenizer, feats)   # (T, 80) raw fbank, full context
    decoder = StreamingGreedyDecoder(model, tokenizer, chunk_size=8, left_chunks=4)
    for piece in pieces:                  # (t, 80) or (1, t, 80) raw fbank, any t
        print(decoder.accept(piece))      # partial transcript so far
    text = decoder.finalize()             # == offline greedy text with the same chunk mask
    decoder = StreamingGreedyDecoder(model, tokenizer, 8, 4, search=make_search("beam", tokenizer))
"""

from __future__ import annotations

from typing import Any

import torch

from asr_kd.inference.search import CtcSearch, GreedySearch, SearchStream

__all__ = [
    "SearchText",
    "StreamingGreedyDecoder",
    "decode_offline",
    "feed_chunks",
]


@torch.inference_mode()
def decode_offline(model: Any, tokenizer: Any, feats: Any, search: CtcSearch | None = None) -> str:
    """Full-context CTC of one utterance at batch size 1: raw fbank ``feats`` (T, F) (torch or
    numpy) -> text, through the model's eager ``forward``; greedy unless ``search`` is given."""
    feats = torch.as_tensor(feats)
    log_probs, out_lens = model(feats.unsqueeze(0), torch.tensor([feats.shape[0]]))
    return (search or GreedySearch(tokenizer)).offline(log_probs[0, : int(out_lens[0])])


class SearchText:
    """``text`` of a streaming decoder's ``self.tokens`` (a ``SearchStream``): shared by the
    torch and ONNX Runtime decoders."""

    tokens: SearchStream

    @property
    def text(self) -> str:
        return self.tokens.text


class StreamingGreedyDecoder(SearchText):
    """Streams one utterance through a streaming ``ConformerCTC`` and decodes it, greedily
    unless ``search`` says otherwise.

    The model state and the search's state (greedy: the last frame's argmax, so a token repeated
    across a chunk boundary is merged, as offline; beam: the beam) persist between calls;
    ``finalize`` flushes the last partial chunk.

    Args:
        model: a streaming ``ConformerCTC`` (put in eval mode here).
        tokenizer: anything with ``.decode(ids) -> str`` and ``.blank_id``.
        chunk_size: encoder frames per chunk.
        left_chunks: attention left context in chunks; -1 = unlimited.
        search: a :class:`~asr_kd.inference.search.CtcSearch` (default: greedy).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        chunk_size: int,
        left_chunks: int = -1,
        search: CtcSearch | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.search = search or GreedySearch(tokenizer)
        self.chunk_size = chunk_size
        self.left_chunks = left_chunks
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self.state = self.model.init_state(1, self.chunk_size, self.left_chunks)
        self.tokens = self.search.stream()

    def push(self, feats_chunk: torch.Tensor) -> None:
        """Feed (t, F) or (1, t, F) raw fbank frames, no partial transcript (its cost)."""
        if feats_chunk.dim() == 2:
            feats_chunk = feats_chunk.unsqueeze(0)
        log_probs, self.state = self.model.forward_chunk(feats_chunk, self.state)
        self.tokens.extend(log_probs[0])  # (1, n, V) -> (n, V)

    def accept(self, feats_chunk: torch.Tensor) -> str:
        """Feed (t, F) or (1, t, F) raw fbank frames; return the partial transcript."""
        self.push(feats_chunk)
        return self.text

    def finalize(self) -> str:
        """End of utterance: decode the buffered tail and return the final transcript."""
        log_probs, self.state = self.model.flush(self.state)
        self.tokens.extend(log_probs[0])
        return self.tokens.finalize()


def feed_chunks(decoder: Any, feats: Any, step: int, on_partial: Any = None) -> str:
    """Feed ``feats`` (T, F) to a streaming decoder ``step`` frames per ``accept``, as a live
    microphone would, then ``finalize``; ``on_partial(frames_fed, text)`` after every chunk.
    Without ``on_partial`` no partial transcript is made (``push``, not ``accept``): a beam
    search's partial transcript is the one part of a chunk whose cost can grow with the audio
    (:class:`~asr_kd.inference.search.BeamStream`). Used by evaluation and
    ``asr-kd-transcribe``, torch and ONNX Runtime decoders alike."""
    if feats.ndim != 2:
        raise ValueError(f"feats must be (frames, channels), got shape {tuple(feats.shape)}")
    for start in range(0, feats.shape[0], step):
        if on_partial is None:
            decoder.push(feats[start : start + step])
        else:
            on_partial(
                min(start + step, feats.shape[0]), decoder.accept(feats[start : start + step])
            )
    return decoder.finalize()
