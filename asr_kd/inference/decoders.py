"""Greedy CTC decoders in torch: offline (:func:`decode_offline`) and streaming with a partial
transcript per chunk (the ONNX Runtime one is :class:`asr_kd.inference.onnx.OnnxStreamingDecoder`),
and feeding audio in chunks. :mod:`asr_kd.inference.factory` builds them (``make_decoder``).

Usage:
    text = decode_offline(model, tokenizer, feats)   # (T, 80) raw fbank, full context
    decoder = StreamingGreedyDecoder(model, tokenizer, chunk_size=8, left_chunks=4)
    for piece in pieces:                  # (t, 80) or (1, t, 80) raw fbank, any t
        print(decoder.accept(piece))      # partial transcript so far
    text = decoder.finalize()             # == offline greedy text with the same chunk mask
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from asr_kd.models.decode import collapse_ids, greedy_ctc

__all__ = [
    "GreedyDecoderText",
    "GreedyTokenStream",
    "StreamingGreedyDecoder",
    "decode_offline",
    "feed_chunks",
]


@torch.inference_mode()
def decode_offline(model: Any, tokenizer: Any, feats: Any) -> str:
    """Full-context greedy CTC of one utterance at batch size 1: raw fbank ``feats`` (T, F)
    (torch or numpy) -> text, through the model's eager ``forward``."""
    feats = torch.as_tensor(feats)
    log_probs, out_lens = model(feats.unsqueeze(0), torch.tensor([feats.shape[0]]))
    ids = greedy_ctc(log_probs, out_lens, blank_id=tokenizer.blank_id)[0]
    return tokenizer.decode(ids)


class GreedyTokenStream:
    """Greedy CTC over the frames of one utterance arriving in pieces: a token repeated across a
    piece boundary is merged, as offline; the text is detokenised only when tokens were added.
    Shared by the torch and the ONNX Runtime streaming decoders.

    >>> class Chars:
    ...     blank_id = 0
    ...     def decode(self, ids): return "".join("_ab"[i] for i in ids)
    >>> stream = GreedyTokenStream(Chars())
    >>> stream.extend(np.array([1, 1])); stream.extend(np.array([1, 0, 2])); stream.text
    'ab'
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.reset()

    def reset(self) -> None:
        self.token_ids: list[int] = []
        self._last = -1
        self._text, self._decoded = "", 0

    def extend(self, frame_ids: np.ndarray) -> None:
        """(n,) per-frame argmax ids of the next n frames (n may be 0)."""
        if frame_ids.size:
            self.token_ids += collapse_ids(frame_ids, self._last, self.tokenizer.blank_id)
            self._last = int(frame_ids[-1])

    @property
    def text(self) -> str:
        if self._decoded != len(self.token_ids):
            self._text = self.tokenizer.decode(self.token_ids)
            self._decoded = len(self.token_ids)
        return self._text


class GreedyDecoderText:
    """``text`` and ``token_ids`` of a streaming decoder's ``self.tokens`` (a
    ``GreedyTokenStream``): shared by the torch and ONNX Runtime decoders."""

    tokens: GreedyTokenStream

    @property
    def text(self) -> str:
        return self.tokens.text

    @property
    def token_ids(self) -> list[int]:
        return self.tokens.token_ids


class StreamingGreedyDecoder(GreedyDecoderText):
    """Streams one utterance through a streaming ``ConformerCTC`` and decodes greedily.

    The model state and the last frame's argmax (so a token repeated across a chunk boundary
    is merged, as offline) persist between calls; ``finalize`` flushes the last partial chunk.

    Args:
        model: a streaming ``ConformerCTC`` (put in eval mode here).
        tokenizer: anything with ``.decode(ids) -> str`` and ``.blank_id``.
        chunk_size: encoder frames per chunk.
        left_chunks: attention left context in chunks; -1 = unlimited.
    """

    def __init__(self, model: Any, tokenizer: Any, chunk_size: int, left_chunks: int = -1):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.left_chunks = left_chunks
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self.state = self.model.init_state(1, self.chunk_size, self.left_chunks)
        self.tokens = GreedyTokenStream(self.tokenizer)

    def accept(self, feats_chunk: torch.Tensor) -> str:
        """Feed (t, F) or (1, t, F) raw fbank frames; return the partial transcript."""
        if feats_chunk.dim() == 2:
            feats_chunk = feats_chunk.unsqueeze(0)
        log_probs, self.state = self.model.forward_chunk(feats_chunk, self.state)
        self._extend(log_probs)
        return self.text

    def finalize(self) -> str:
        """End of utterance: decode the buffered tail and return the final transcript."""
        log_probs, self.state = self.model.flush(self.state)
        self._extend(log_probs)
        return self.text

    def _extend(self, log_probs: torch.Tensor) -> None:
        self.tokens.extend(log_probs[0].argmax(dim=-1).cpu().numpy())  # (1, n, V) -> (n,)


def feed_chunks(decoder: Any, feats: Any, step: int, on_partial: Any = None) -> str:
    """Feed ``feats`` (T, F) to a streaming decoder ``step`` frames per ``accept``, as a live
    microphone would, then ``finalize``; ``on_partial(frames_fed, text)`` after every chunk.
    Used by evaluation and ``asr-kd-transcribe``, torch and ONNX Runtime decoders alike."""
    if feats.ndim != 2:
        raise ValueError(f"feats must be (frames, channels), got shape {tuple(feats.shape)}")
    for start in range(0, feats.shape[0], step):
        partial = decoder.accept(feats[start : start + step])
        if on_partial is not None:
            on_partial(min(start + step, feats.shape[0]), partial)
    return decoder.finalize()
