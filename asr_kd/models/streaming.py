"""The streaming step's settings, spelled once for the model, the export and the runners.

``StepSpec`` is one streaming step of a model at one chunk size and left context: the numbers
``ConformerCTC.forward_chunk`` streams by (input window, hop, left-pad frames, cached frames) and
the interface of the exported step graph (input and cache names, their shapes, which output
feeds which cache, the rotary table). ``ConformerCTC.step_spec`` derives it from the model;
``asr_kd.export`` names and shapes the graph's inputs and outputs by it and writes it into the
graph's metadata (``to_metadata``); the ONNX Runtime runner rebuilds the same spec from there
(``from_metadata``) and binds its buffers by it. A model change is one edit here.

Step graph I/O (C chunk frames, Tc = LC * C cached frames, D d_model, H heads, K-1 conv context):

    inputs   feats (1, 1, window, F) raw fbank, cos / sin (C, rotary_width) rotary rows at
             the stream offset, mask (1, Tc + C) additive, then per layer i
             k_cache_i, v_cache_i (Tc, D), conv_cache_i (K-1, D)
    outputs  log_probs (C, V), then per layer k_all_i, v_all_i (Tc + C, D),
             conv_all_i (K-1 + C + 1, D): the next step's cache is rows [C : C + rows] of each

Usage:
    chunk_size = chunk_frames(model, 320)          # 320 ms -> encoder frames (8 at 40 ms)
    spec = model.step_spec(chunk_size, left_chunks=4)
    graph_meta = {**other_keys, **spec.to_metadata()}
    assert StepSpec.from_metadata(graph_meta) == spec
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from asr_kd.errors import BadFileError, ConfigError

__all__ = ["CacheSpec", "StepSpec", "check_chunk_args", "chunk_frames"]

# Per layer, in this order: rotated keys, values, causal-conv input rows.
_CACHE_KINDS = ("k", "v", "conv")
# Extra multiply-accumulates per step up to which the step graph's attention uses per-head query
# copies (StepSpec.head_copies): between student_tiny at 640 ms (0.36 M extra, the copies 7 %
# faster) and student_small at 160 ms (1.4 M; at 320 ms, 3 M, batched heads are 20 % faster).
_HEAD_COPIES_MAX_MACS = 1_000_000


def chunk_frames(
    model: nn.Module, chunk_ms: float, option: str = "chunk_sizes_ms entry", source: str = ""
) -> int:
    """A chunk size in ms -> encoder frames; ``ValueError`` unless it is a positive multiple of
    the model's output frame shift. ``option`` names the setting, ``source`` the model, in the
    message. Shared by export, evaluate and transcribe."""
    shift = model.frame_shift_ms
    frames = chunk_ms / shift
    if frames < 1 or frames != int(frames):
        raise ConfigError(
            f"{option} {chunk_ms} is not a positive multiple of the output frame shift "
            f"{shift} ms of {source or 'the model'}"
        )
    return int(frames)


def check_chunk_args(chunk_size: int | None, left_chunks: int) -> None:
    """``ConfigError`` unless ``chunk_size`` is None or > 0 and ``left_chunks`` >= -1."""
    if chunk_size is not None and chunk_size <= 0:
        raise ConfigError(f"chunk_size must be > 0 encoder frames or None, got {chunk_size}")
    if left_chunks < -1:
        raise ConfigError(f"left_chunks must be >= 0 or -1 (unlimited), got {left_chunks}")


@dataclass(frozen=True)
class CacheSpec:
    """One fixed-size cache of the step graph.

    Input ``name`` (rows, width) is rows ``[start : start + rows]`` of the previous step's
    output ``source`` (source_rows, width); zeros before the first step.
    """

    name: str
    source: str
    layer: int
    kind: str  # one of "k", "v", "conv"
    rows: int
    source_rows: int
    width: int
    start: int


@dataclass(frozen=True)
class StepSpec:
    """One streaming step of a streaming ``ConformerCTC`` (build it with ``model.step_spec``).

    Attributes:
        chunk_size: C, encoder frames per step.
        left_chunks: LC, chunks of attention left context; -1 = unlimited (torch only: the
            step graph needs the fixed-size caches of ``LC >= 0``).
        subsampling_factor, receptive_field, left_pad: of the subsampling (input frames per
            encoder frame, input frames one encoder frame sees, zero frames prepended).
        input_dim, vocab_size, d_model, num_heads, num_layers: F, V, D, H, L.
        conv_context: K - 1, past frames of the causal depthwise conv.
        inv_freq: (Dh,) ``conformer.rotary_frequencies``: position p's angles are p * inv_freq.

    Example (``student_tiny``'s shape: 4x subsampling, D 64, H 2, K 15, 3 layers; 320 ms chunks):
        >>> from asr_kd.models import ConformerCTC
        >>> model = ConformerCTC(d_model=64, num_layers=3, num_heads=2, streaming=True)
        >>> spec = model.step_spec(chunk_size=8, left_chunks=4)
        >>> spec.window, spec.hop, spec.left_pad, spec.cached_frames, spec.mask_shape
        (35, 32, 3, 32, (1, 40))
        >>> spec.input_shapes["feats"], spec.input_shapes["cos"], len(spec.caches)
        ((1, 1, 35, 80), (8, 192), 9)
        >>> c = spec.caches[2]  # conv_cache_0 = rows [8 : 8 + 14] of the last step's conv_all_0
        >>> c.name, c.source, c.rows, c.source_rows, c.start
        ('conv_cache_0', 'conv_all_0', 14, 23, 8)
        >>> spec.output_frames(spec.window), spec.output_frames(spec.window - 1)
        (8, 7)
    """

    chunk_size: int
    left_chunks: int
    subsampling_factor: int
    receptive_field: int
    left_pad: int
    input_dim: int
    vocab_size: int
    d_model: int
    num_heads: int
    num_layers: int
    conv_context: int
    inv_freq: tuple[float, ...] = field(repr=False)

    def __post_init__(self) -> None:
        check_chunk_args(self.chunk_size, self.left_chunks)

    # ------------------------------------------------------------- the torch stream's numbers
    def input_frames(self, n: int) -> int:
        """Input frames (left pad included) that give ``n >= 1`` encoder frames."""
        return self.subsampling_factor * (n - 1) + self.receptive_field

    def output_frames(self, num_input: int) -> int:
        """Complete encoder frames that ``num_input`` buffered input frames (left pad included)
        give: the inverse of ``input_frames``, 0 when too few."""
        return max(0, (num_input - self.receptive_field) // self.subsampling_factor + 1)

    @property
    def window(self) -> int:
        """Input frames of one step: ``factor * (C - 1) + receptive_field``."""
        return self.input_frames(self.chunk_size)

    @property
    def hop(self) -> int:
        """Input frames between the starts of two steps' windows: ``factor * C``."""
        return self.subsampling_factor * self.chunk_size

    @property
    def cached_frames(self) -> int | None:
        """Tc = LC * C, the past frames a chunk attends to; None = unlimited (LC = -1)."""
        return None if self.left_chunks < 0 else self.left_chunks * self.chunk_size

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    # ------------------------------------------------------------- the step graph's interface
    @property
    def head_copies(self) -> bool:
        """Whether the step graph computes attention on per-head query copies (one product for
        every head's scores, the fewest graph nodes; :mod:`asr_kd.export.fold`) rather than on
        batched heads (reshapes and transposes: a few more nodes, no wasted products). The copies
        multiply the queries', scores', values' and output projection's work by H, so they pay
        only while that extra work costs less than the nodes they save (about 1 us each on one
        CPU thread): for ``student_tiny``, not for ``student_small`` (docs/deploy.md)."""
        cached, c, d = self._finite_cache(), self.chunk_size, self.d_model
        extra_macs = c * (self.num_heads - 1) * d * (3 * d + 2 * (cached + c))
        return extra_macs <= _HEAD_COPIES_MAX_MACS

    @property
    def rotary_width(self) -> int:
        """Columns of ``cos``/``sin``: the queries (H per-head copies with ``head_copies``),
        then the keys."""
        return ((self.num_heads if self.head_copies else 1) + 1) * self.d_model

    @property
    def rotary_repeats(self) -> int:
        """``rotary_width`` = ``rotary_repeats`` tiles of the (Dh,) angles."""
        return self.rotary_width // self.head_dim

    def rotary_table(self, num_positions: int) -> tuple[np.ndarray, np.ndarray]:
        """(cos, sin) float32 (num_positions, rotary_width): rows 0.. of the step's cos / sin."""
        inv_freq = np.asarray(self.inv_freq, dtype=np.float32)
        angles = np.arange(num_positions, dtype=np.float32)[:, None] * inv_freq
        reps = (1, self.rotary_repeats)
        return np.tile(np.cos(angles), reps), np.tile(np.sin(angles), reps)

    @property
    def mask_shape(self) -> tuple[int, int]:
        """(1, Tc + C): additive attention mask over the cache slots, then the chunk."""
        return (1, self._finite_cache() + self.chunk_size)

    @property
    def caches(self) -> tuple[CacheSpec, ...]:
        """Per layer, k, v and conv caches, in the graph's input order (and its outputs')."""
        cached, c, d = self._finite_cache(), self.chunk_size, self.d_model
        rows = {"k": (cached, cached + c), "v": (cached, cached + c)}
        rows["conv"] = (self.conv_context, self.conv_context + c + 1)  # + the fold's ones row
        return tuple(
            CacheSpec(f"{kind}_cache_{i}", f"{kind}_all_{i}", i, kind, *rows[kind], d, c)
            for i in range(self.num_layers)
            for kind in _CACHE_KINDS
        )

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every graph input, in order: feats, cos, sin, mask, then ``caches``."""
        rotary = (self.chunk_size, self.rotary_width)
        shapes = {
            "feats": (1, 1, self.window, self.input_dim),
            "cos": rotary,
            "sin": rotary,
            "mask": self.mask_shape,
        }
        shapes.update((cache.name, (cache.rows, cache.width)) for cache in self.caches)
        return shapes

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every graph output, in order: log_probs, then each cache's source."""
        shapes = {"log_probs": (self.chunk_size, self.vocab_size)}
        shapes.update((c.source, (c.source_rows, c.width)) for c in self.caches)
        return shapes

    def _finite_cache(self) -> int:
        if self.cached_frames is None:
            raise ValueError(
                f"left_chunks={self.left_chunks}: a step graph needs a finite attention cache "
                "(left_chunks >= 0)"
            )
        return self.cached_frames

    # ------------------------------------------------------------- metadata
    def to_metadata(self) -> dict:
        """JSON-able dict for the graph's metadata: the fields, and (for readers, and checked by
        ``from_metadata``) ``input_shapes``, ``inputs``, ``outputs`` and ``caches`` (name ->
        source)."""
        meta = {name: getattr(self, name) for name in self.__dataclass_fields__}
        meta["inv_freq"] = list(self.inv_freq)
        meta["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        meta["inputs"] = list(self.input_shapes)
        meta["outputs"] = list(self.output_shapes)
        meta["caches"] = {cache.name: cache.source for cache in self.caches}
        return meta

    @classmethod
    def from_metadata(cls, meta: dict, source: str = "the metadata") -> StepSpec:
        """The spec ``to_metadata`` wrote; ``BadFileError`` when a field is missing or the
        names and shapes stored beside them are not the ones the fields give (``source``
        names the file in the message)."""
        missing = [name for name in cls.__dataclass_fields__ if name not in meta]
        if missing:
            raise BadFileError(
                f"{source} has no step-spec field(s) {missing}: it was exported by another "
                "asr_kd version; export it again with asr-kd-export"
            )
        fields = {name: meta[name] for name in cls.__dataclass_fields__}
        spec = cls(**{**fields, "inv_freq": tuple(float(f) for f in meta["inv_freq"])})
        stored = {k: meta.get(k) for k in ("input_shapes", "inputs", "outputs", "caches")}
        derived = {k: spec.to_metadata()[k] for k in stored}
        if stored != derived:
            bad = sorted(k for k in stored if stored[k] != derived[k])
            raise BadFileError(
                f"{source}: its stored {bad} differ from those its step-spec fields give "
                f"(stored {stored[bad[0]]}, expected {derived[bad[0]]}); export it again with "
                "asr-kd-export"
            )
        return spec
