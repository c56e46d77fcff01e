"""Run the graphs of :mod:`asr_kd.export` with ONNX Runtime: offline, streaming, greedy CTC.

Everything a runner needs (tokenizer, CMVN mean, and for a step graph its
:class:`~asr_kd.models.streaming.StepSpec`: subsampling, chunk size, cache names and shapes,
rotary frequencies) is in the ONNX file's ``metadata_props["asr_kd"]``; no checkpoint, no torch
arithmetic.

- ``OnnxCTC(path).log_probs(feats)``: a whole utterance through ``full.onnx``.
- ``OnnxStreamingCTC(path)``: ``accept(feats) -> log_probs`` / ``flush()`` with the semantics of
  ``ConformerCTC.forward_chunk`` / ``flush``: any number of frames per call, the remainder
  buffered, the partial last chunk emitted by ``flush`` (padded to a whole chunk inside, its
  padded frames masked out of attention and dropped from the output).
- ``OnnxStreamingDecoder``: ``StreamingGreedyDecoder``'s interface (``accept``, ``finalize``,
  ``reset``, ``text``) on ``OnnxStreamingCTC``.

Per chunk the Python work is a few ``numpy.copyto`` into preallocated staging arrays and one
``run_with_iobinding``: every input and output is bound once to fixed buffers; the caches live in
two sets of output buffers used alternately, and each cache input is bound to its
``CacheSpec.source``, the previous step's output, at row offset ``CacheSpec.start`` (``K[C:]``
etc.), so nothing is copied or re-bound.

Usage:
    decoder = OnnxStreamingDecoder(OnnxStreamingCTC("exp/onnx/student_kd/stream-c8-l4.onnx"))
    for piece in pieces:              # (t, 80) raw fbank, any t
        print(decoder.accept(piece))
    text = decoder.finalize()
    decoder.reset()                   # next utterance: sessions and buffers are reused

    model = OnnxCTC("exp/onnx/teacher/full.onnx", threads=1)
    text = model.transcribe(feats)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import BadFileError, MissingFileError
from asr_kd.inference.decoders import SearchText
from asr_kd.inference.search import CtcSearch, GreedySearch
from asr_kd.models.streaming import StepSpec

__all__ = [
    "FULL_FILE",
    "STEP_GLOB",
    "OnnxCTC",
    "OnnxStreamingCTC",
    "OnnxStreamingDecoder",
    "read_metadata",
    "session_options",
    "step_file_name",
]

# The file names of an export directory (written by asr_kd.export, read here and by transcribe).
FULL_FILE = "full.onnx"
STEP_GLOB = "stream-c*-l*.onnx"


def step_file_name(chunk_size: int, left_chunks: int) -> str:
    """The step graph of ``chunk_size`` encoder frames and ``left_chunks`` cached chunks."""
    return f"stream-c{chunk_size}-l{left_chunks}.onnx"


def session_options(threads: int = 1) -> ort.SessionOptions:
    """CPU options: ``threads`` intra-op threads, sequential execution, all graph optimisations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def _session(
    path: str | Path, threads: int, options: ort.SessionOptions | None = None
) -> tuple[ort.InferenceSession, dict]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"ONNX model not found: {path}")
    options = options or session_options(threads)
    sess = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"])
    return sess, _parse_metadata(sess.get_modelmeta().custom_metadata_map, path)


def _parse_metadata(props: dict[str, str], path: str | Path) -> dict:
    if "asr_kd" not in props:
        raise BadFileError(f"{path} has no asr_kd metadata: export it with asr-kd-export")
    return json.loads(props["asr_kd"])


def read_metadata(path: str | Path) -> dict:
    """The ``asr_kd`` metadata dict of an exported graph."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return _parse_metadata({p.key: p.value for p in proto.metadata_props}, path)


def _check_graph(session: ort.InferenceSession, spec: StepSpec, path: str | Path) -> None:
    """The graph's inputs and outputs are those its metadata's step spec names, in order."""
    for what, found, expected in (
        ("inputs", [i.name for i in session.get_inputs()], list(spec.input_shapes)),
        ("outputs", [o.name for o in session.get_outputs()], list(spec.output_shapes)),
    ):
        if found != expected:
            raise BadFileError(
                f"{path}: graph {what} {found} != {expected} named by its metadata; export it "
                "again with asr-kd-export"
            )


def _tokenizer(meta: dict):
    return Tokenizer.from_dict(meta["tokenizer"])


def _as_frames(feats: Any, input_dim: int) -> np.ndarray:
    """(t, F) or (1, t, F) numpy or torch -> (t, F) float32 numpy."""
    feats = np.asarray(feats.numpy() if hasattr(feats, "numpy") else feats, dtype=np.float32)
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    if feats.ndim != 2 or feats.shape[1] != input_dim:
        raise ValueError(
            f"feats must be (t, {input_dim}) or (1, t, {input_dim}), got {feats.shape}"
        )
    return feats


class OnnxCTC:
    """Full-context graph (``full.onnx``): one utterance at a time.

    Args:
        path: an ``asr-kd-export`` ``full.onnx``.
        threads: ORT intra-op threads.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.session, self.meta = _session(path, threads)
        if self.meta.get("kind") != "full":
            raise BadFileError(f"{path} is a {self.meta.get('kind')!r} graph, expected 'full'")
        self.tokenizer = _tokenizer(self.meta)

    def log_probs(self, feats: Any) -> np.ndarray:
        """(T, F) raw fbank -> (T // subsampling_factor, V) CTC log-probs."""
        feats = _as_frames(feats, self.meta["input_dim"])
        if feats.shape[0] < self.meta["subsampling_factor"]:  # no encoder frame
            return np.zeros((0, self.meta["vocab_size"]), dtype=np.float32)
        return self.session.run(None, {"feats": feats})[0]

    def transcribe(self, feats: Any, search: CtcSearch | None = None) -> str:
        """(T, F) raw fbank -> text; greedy unless ``search`` is given."""
        return (search or GreedySearch(self.tokenizer)).offline(self.log_probs(feats))


class OnnxStreamingCTC:
    """A streaming step graph (``stream-c<C>-l<LC>.onnx``) with its state, for one stream.

    Args:
        path: an ``asr-kd-export`` step graph.
        threads: ORT intra-op threads.
        options: ORT session options instead of ``session_options(threads)`` (a profiler's).
    """

    def __init__(
        self, path: str | Path, threads: int = 1, options: ort.SessionOptions | None = None
    ) -> None:
        self.session, meta = _session(path, threads, options)
        if meta.get("kind") != "step":
            raise BadFileError(f"{path} is a {meta.get('kind')!r} graph, expected 'step'")
        self.meta = meta
        self.tokenizer = _tokenizer(meta)
        self.spec = spec = StepSpec.from_metadata(meta, str(path))
        _check_graph(self.session, spec, path)
        self.chunk_size, self.left_chunks = spec.chunk_size, spec.left_chunks
        self._cached = spec.cached_frames
        self._pad_frame = np.asarray(meta["cmvn_mean"], dtype=np.float32)  # normalises to 0
        shapes, f32 = spec.input_shapes, np.float32
        self._feats = np.zeros(shapes["feats"], f32)
        self._cos, self._sin = np.zeros(shapes["cos"], f32), np.zeros(shapes["sin"], f32)
        self._mask = np.zeros(shapes["mask"], f32)
        self._log_probs = np.zeros(spec.output_shapes["log_probs"], f32)
        self._buffer = np.zeros((max(4 * spec.window, 1024), spec.input_dim), f32)
        self._table_cos = self._table_sin = np.zeros((0, spec.rotary_width), f32)
        # Two sets of cache-source outputs; step parity p writes set p and reads set 1 - p.
        self._outputs = [
            {c.source: np.zeros((c.source_rows, c.width), f32) for c in spec.caches}
            for _ in range(2)
        ]
        self._bindings = [self._bind(p) for p in (0, 1)]
        self.reset()

    def _bind(self, p: int) -> ort.IOBinding:
        binding = self.session.io_binding()

        def bind(fn, name, array, row_offset=0, shape=None):
            ptr = array.ctypes.data + row_offset * array.shape[-1] * array.itemsize
            fn(name, "cpu", 0, np.float32, list(shape or array.shape), ptr)

        for name, array in (("feats", self._feats), ("cos", self._cos), ("sin", self._sin)):
            bind(binding.bind_input, name, array)
        bind(binding.bind_input, "mask", self._mask)
        for c in self.spec.caches:  # the previous step's outputs, rows [start : start + rows]
            source = self._outputs[1 - p][c.source]
            bind(binding.bind_input, c.name, source, c.start, (c.rows, c.width))
        bind(binding.bind_output, "log_probs", self._log_probs)
        for name, array in self._outputs[p].items():
            bind(binding.bind_output, name, array)
        return binding

    def reset(self) -> None:
        """Start a new utterance (zero caches, position 0, left-pad frames buffered)."""
        for outputs in self._outputs:
            for array in outputs.values():
                array.fill(0.0)
        self._parity = 0
        self.offset = 0
        left_pad = self.spec.left_pad
        self._buffer[:left_pad] = self._pad_frame
        self._start, self._end = 0, left_pad
        self._set_mask(0, self.chunk_size)

    def _set_mask(self, cached: int, valid: int) -> None:
        """0 where attention may look: the last ``cached`` cache slots, the first ``valid``
        frames of the chunk; -inf elsewhere."""
        self._mask.fill(-np.inf)
        self._mask[0, self._cached - cached : self._cached + valid] = 0.0

    def _append(self, feats: np.ndarray) -> None:
        n, t = self._end - self._start, feats.shape[0]
        if self._end + t > self._buffer.shape[0]:  # move the kept frames to the front
            if n + t > self._buffer.shape[0]:
                grown = np.zeros((2 * (n + t), self._buffer.shape[1]), np.float32)
                grown[:n] = self._buffer[self._start : self._end]
                self._buffer = grown
            else:
                self._buffer[:n] = self._buffer[self._start : self._end]
            self._start, self._end = 0, n
        self._buffer[self._end : self._end + t] = feats
        self._end += t

    def _rotary(self) -> None:
        end = self.offset + self.chunk_size
        if end > self._table_cos.shape[0]:  # grow the table (long streams)
            size = max(2 * self._table_cos.shape[0], end, 1024)
            self._table_cos, self._table_sin = self.spec.rotary_table(size)
        np.copyto(self._cos, self._table_cos[self.offset : end])
        np.copyto(self._sin, self._table_sin[self.offset : end])

    def _step(self) -> np.ndarray:
        """Run the chunk in ``self._feats``; (C, V) log-probs (a view, valid until next step)."""
        self._rotary()
        self.session.run_with_iobinding(self._bindings[self._parity])
        self._parity ^= 1
        self.offset += self.chunk_size
        if self.offset <= self._cached:  # the cache fills up during the first left_chunks chunks
            self._set_mask(self.offset, self.chunk_size)
        return self._log_probs

    def chunks(self, feats: Any):
        """Append frames; yield the (C, V) log-probs (a reused view) of each completed chunk."""
        self._append(_as_frames(feats, self.spec.input_dim))
        window, hop = self.spec.window, self.spec.hop
        while self._end - self._start >= window:
            np.copyto(self._feats[0, 0], self._buffer[self._start : self._start + window])
            self._start += hop
            yield self._step()

    def accept(self, feats: Any) -> np.ndarray:
        """Like ``forward_chunk``: (n * C, V) log-probs of the chunks this call completes."""
        out = [lp.copy() for lp in self.chunks(feats)]
        return np.concatenate(out) if out else self._log_probs[:0].copy()

    def flush(self) -> np.ndarray:
        """End of utterance: the partial last chunk's (n < C, V) log-probs. The padded step
        leaves caches that no later chunk may see, so the runner resets itself for the next
        utterance (unlike torch ``flush``, whose state could be fed on)."""
        frames = self._end - self._start
        n = self.spec.output_frames(frames)
        out = self._log_probs[:0].copy()
        if n > 0:
            self._feats[0, 0] = self._pad_frame  # padding: only feeds frames >= n, masked out
            self._feats[0, 0, :frames] = self._buffer[self._start : self._end]
            self._set_mask(min(self.offset, self._cached), n)
            out = self._step()[:n].copy()
        self.reset()
        return out


class OnnxStreamingDecoder(SearchText):
    """``StreamingGreedyDecoder`` on ONNX Runtime: partial transcript per ``accept``.

    Args:
        model: an ``OnnxStreamingCTC`` (reused across utterances: call ``reset``).
        tokenizer: ``.decode``/``.blank_id``; the one in the graph's metadata when None.
        search: a :class:`~asr_kd.inference.search.CtcSearch` (default: greedy).
    """

    def __init__(
        self, model: OnnxStreamingCTC, tokenizer: Any = None, search: CtcSearch | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer or model.tokenizer
        self.search = search or GreedySearch(self.tokenizer)
        self.reset()

    def reset(self) -> None:
        self.model.reset()
        self.tokens = self.search.stream()

    def push(self, feats_chunk: Any) -> None:
        """Feed (t, F) or (1, t, F) raw fbank frames, no partial transcript (its cost)."""
        for log_probs in self.model.chunks(feats_chunk):
            self.tokens.extend(log_probs)  # (C, V), a view the search reads before the next step

    def accept(self, feats_chunk: Any) -> str:
        """Feed (t, F) or (1, t, F) raw fbank frames; return the partial transcript."""
        self.push(feats_chunk)
        return self.tokens.text

    def finalize(self) -> str:
        """End of utterance: decode the buffered tail and return the final transcript."""
        self.tokens.extend(self.model.flush())
        return self.tokens.finalize()
