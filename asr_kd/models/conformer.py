"""Conformer CTC: one model for the full-context teacher and the streaming student.

Shapes throughout: B batch, T input (fbank) frames, T' encoder frames (T // subsampling),
F feature bins, D d_model, H heads, Dh = D / H, K depthwise kernel, L layers, V vocabulary.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from asr_kd.errors import ConfigError
from asr_kd.models.dropout import Dropout
from asr_kd.models.masks import attention_mask, padding_mask
from asr_kd.models.streaming import StepSpec, check_chunk_args
from asr_kd.models.subsampling import Conv2dSubsampling

__all__ = ["ConformerCTC", "StreamingState", "rotary_frequencies"]

# fbank frame shift; the data layer's FRAME_SHIFT_MS (kept here so models import nothing of data).
_INPUT_FRAME_SHIFT_MS = 10
# Rotary base of Su et al. (2021); positions are absolute encoder frame indices.
_ROTARY_BASE = 10000.0


@dataclass
class StreamingState:
    """What ``forward_chunk`` carries between calls: explicit tensors, as WeNet's ``forward_chunk``.

    Attributes:
        spec: the step's settings (``ConformerCTC.step_spec``): ``chunk_size`` (encoder frames
            per chunk) and ``left_chunks`` (chunks of attention left context, -1 = unlimited)
            among them, also readable as ``state.chunk_size`` and ``state.left_chunks``.
        offset: encoder frames emitted so far (the rotary position of the next frame).
        input_buffer: (B, n, F) normalised input frames not yet consumed by subsampling; starts
            as the subsampling's ``left_pad`` zero frames, like the full forward's padding.
        att_cache: (L, B, H, Tc, 2*Dh) rotated keys and values of the last Tc frames per layer;
            Tc <= spec.cached_frames, so per-chunk cost does not grow with the audio.
        cnn_cache: (L, B, D, K-1) inputs of each causal depthwise conv for its last K-1 frames.
    """

    spec: StepSpec
    offset: int
    input_buffer: torch.Tensor
    att_cache: torch.Tensor
    cnn_cache: torch.Tensor

    @property
    def chunk_size(self) -> int:
        return self.spec.chunk_size

    @property
    def left_chunks(self) -> int:
        return self.spec.left_chunks


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotary_frequencies(head_dim: int, device=None) -> torch.Tensor:
    """(Dh,) angle per position of each rotary channel, half-split layout (GPT-NeoX style):
    position p's angles are ``p * rotary_frequencies(Dh)``; a ``StepSpec``'s ``inv_freq``, so
    also the exported graphs' and the ONNX runner's rotary tables."""
    inv_freq = 1.0 / _ROTARY_BASE ** (torch.arange(0, head_dim, 2, device=device) / head_dim)
    return torch.cat((inv_freq, inv_freq)).float()


def _rotary_table(num_positions: int, head_dim: int, device=None) -> tuple[torch.Tensor, ...]:
    """(cos, sin), each (num_positions, Dh)."""
    positions = torch.arange(num_positions, device=device, dtype=torch.float32)
    angles = positions[:, None] * rotary_frequencies(head_dim, device)
    return angles.cos(), angles.sin()


class _FeedForward(nn.Sequential):
    """Pre-norm feed-forward: LayerNorm, Linear, SiLU, Dropout, Linear, Dropout.

    An ``nn.Sequential``, so the checkpoint keys stay ``ff1.0.weight``, ``ff1.1.weight``,
    ``ff1.4.weight``...; the properties name its parts for readers such as the ONNX fold.
    """

    def __init__(self, d_model: int, ff_dim: int, dropout: float) -> None:
        super().__init__(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ff_dim),
            nn.SiLU(),
            Dropout(dropout),
            nn.Linear(ff_dim, d_model),
            Dropout(dropout),
        )

    norm = property(lambda self: self[0], doc="LayerNorm(D)")
    linear1 = property(lambda self: self[1], doc="Linear D -> ff_dim, then SiLU, dropout1")
    dropout1 = property(lambda self: self[3])
    linear2 = property(lambda self: self[4], doc="Linear ff_dim -> D, then dropout2")
    dropout2 = property(lambda self: self[5])


class _SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions and an optional k/v cache."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = Dropout(dropout)
        self.num_heads = num_heads

    def forward(self, x, cos, sin, mask=None, cache=None):
        """x (B, T', D); cos, sin (T', Dh); mask (B, 1, T', T') or None; cache (B, H, Tc, 2*Dh)
        or None -> out (B, T', D), keys+values (B, H, Tc + T', 2*Dh) for the next cache (None
        when ``cache`` is None: the full forward keeps no cache)."""
        b, t, d = x.shape
        qkv = self.qkv(self.norm(x)).view(b, t, 3, self.num_heads, d // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, T', Dh)
        # Queries and keys rotate together (one set of elementwise kernels, not two); the full
        # forward keeps no cache, so it never concatenates keys and values.
        (q, k), v = qkv[:2] * cos + _rotate_half(qkv[:2]) * sin, qkv[2]
        kv = None
        if cache is not None:  # streaming: attend over the cached frames too
            kv = torch.cat((k, v), dim=-1)
            if cache.size(2) > 0:
                kv = torch.cat((cache, kv), dim=2)
            k, v = kv.chunk(2, dim=-1)
        # No dropout on the attention weights: on CPU it forces the unfused path and a
        # (B, H, T', T') Bernoulli draw, 6 % of a teacher_small training step for little gain.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.dropout(self.proj(out.transpose(1, 2).reshape(b, t, d))), kv


class _ConvModule(nn.Module):
    """Conformer convolution module: pointwise + GLU, depthwise conv, norm, SiLU, pointwise.

    Causal mode pads only on the left (from the cache when streaming); LayerNorm replaces
    BatchNorm there, since batch statistics mix frames across time and utterances.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float, causal: bool, norm: str):
        super().__init__()
        self.norm_in = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.batch_norm = norm == "batch_norm"
        self.norm_dw = nn.BatchNorm1d(d_model) if self.batch_norm else nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = Dropout(dropout)
        self.causal = causal
        self.context = kernel_size - 1

    def forward(self, x, pad_mask=None, cache=None):
        """x (B, T', D); pad_mask (B, T') True = valid, or None; cache (B, D, K-1) or None
        -> out (B, T', D), new cache (B, D, K-1) (causal) or None."""
        y = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)
        if pad_mask is not None:  # padding must read as the zeros an unpadded sequence sees
            y = y.masked_fill(~pad_mask[..., None], 0.0)
        y = y.transpose(1, 2)  # (B, D, T')
        new_cache, chunk_mode = None, cache is not None
        if self.causal:
            if cache is None:
                cache = y.new_zeros(y.size(0), y.size(1), self.context)
            y = torch.cat((cache, y), dim=2)
            new_cache = y[:, :, y.size(2) - self.context :]
        else:
            y = F.pad(y, (self.context // 2, self.context // 2))
        if chunk_mode:
            # A streaming chunk is a few frames: a strided view times the kernel (a matmul, so
            # FlopCounterMode counts it) is ~5x faster than oneDNN's depthwise conv there
            # (65 vs 12 us at D=64, K=15, 8 frames); on whole utterances conv1d wins by far.
            taps = y.unfold(2, self.context + 1, 1)  # (B, D, T', K)
            y = (taps @ self.depthwise.weight.transpose(1, 2)).squeeze(-1)
            y = y + self.depthwise.bias[:, None]
        else:
            y = self.depthwise(y)
        y = self.norm_dw(y).transpose(1, 2) if self.batch_norm else self.norm_dw(y.transpose(1, 2))
        return self.dropout(self.pointwise_out(F.silu(y))), new_cache


class _ConformerLayer(nn.Module):
    """Macaron block of Gulati et al.: FFN/2, MHSA, Conv, FFN/2, LayerNorm (all pre-norm)."""

    def __init__(self, d_model, num_heads, ff_dim, kernel_size, dropout, causal, conv_norm):
        super().__init__()
        self.ff1 = _FeedForward(d_model, ff_dim, dropout)
        self.attn = _SelfAttention(d_model, num_heads, dropout)
        self.conv = _ConvModule(d_model, kernel_size, dropout, causal, conv_norm)
        self.ff2 = _FeedForward(d_model, ff_dim, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x, cos, sin, att_mask=None, pad_mask=None, att_cache=None, cnn_cache=None):
        """x (B, T', D) -> (x, keys+values (B, H, Tc + T', 2*Dh) or None without ``att_cache``,
        conv cache (B, D, K-1) or None when not causal)."""
        x = torch.add(x, self.ff1(x), alpha=0.5)  # one kernel for x + 0.5 * ff1(x), same values
        att, kv = self.attn(x, cos, sin, att_mask, att_cache)
        x = x + att
        conv, cnn = self.conv(x, pad_mask, cnn_cache)
        x = x + conv
        x = torch.add(x, self.ff2(x), alpha=0.5)
        return self.norm(x), kv, cnn


class ConformerCTC(nn.Module):
    """Conformer encoder with a CTC head, full-context (teacher) or streaming (student).

    The encoder follows Gulati et al., "Conformer: Convolution-augmented Transformer for Speech
    Recognition" (Interspeech 2020): Conv2d subsampling, then macaron blocks of half-step
    feed-forward, multi-head self-attention, convolution module, half-step feed-forward. Positions
    are rotary (Su et al. 2021, RoFormer) on absolute frame indices, so cached keys keep their
    rotation and streaming needs no relative-position bookkeeping.

    ``streaming=True`` makes every part causal: left-padded subsampling, causal depthwise conv
    with LayerNorm, and chunk-masked attention. Training draws the chunk size per batch from
    ``train_chunk_sizes`` (WeNet's dynamic chunk training, Zhang et al. 2020 / Yao et al. 2021,
    "WeNet: Production Oriented Streaming and Non-streaming End-to-End Speech Recognition
    Toolkit"), so one model serves several latencies; ``None`` in the set is full context.
    ``forward_chunk`` reproduces ``forward(..., chunk_size, left_chunks)`` exactly, chunk by chunk.

    Args:
        vocab_size: V, CTC outputs including blank (id 0).
        input_dim: F, fbank bins.
        d_model: D.
        num_layers: L.
        num_heads: H (D / H must be even for rotary positions).
        ff_dim: feed-forward width; 4 * D when None (Gulati et al.).
        conv_kernel_size: K of the depthwise conv (odd when full-context).
        subsampling_factor: 2, 4, 6 or 8; the encoder frame shift is 10 ms times this.
        subsampling_channels: Conv2d channels of the subsampling; D when None (WeNet).
        dropout: dropout on the FFN hidden layer and every residual branch (not on attention
            weights: costly on CPU); :class:`asr_kd.models.dropout.Dropout`, whose CPU mask is
            cheaper than ``nn.Dropout``'s.
        streaming: causal, chunk-wise model (student) instead of full context (teacher).
        train_chunk_sizes: chunk sizes (encoder frames) drawn by ``sample_chunk_size``;
            ``None`` = full context. Default ``[None]`` (full context only).
        default_left_chunks: attention left context, in chunks, that the training step and
            streaming decoders should pass as ``left_chunks``; -1 = unlimited.
        conv_norm: "layer_norm" or "batch_norm" (full-context only) after the depthwise conv.

    Example:
        >>> model = ConformerCTC(vocab_size=29, d_model=64, num_layers=2, num_heads=2,
        ...                      streaming=True, train_chunk_sizes=[4, 8, None]).eval()
        >>> log_probs, out_lens = model(torch.randn(2, 100, 80), torch.tensor([100, 61]),
        ...                             chunk_size=4, left_chunks=2)
        >>> log_probs.shape, out_lens.tolist()
        (torch.Size([2, 25, 29]), [25, 15])
        >>> state = model.init_state(batch_size=1, chunk_size=4, left_chunks=2)
        >>> lp, state = model.forward_chunk(torch.randn(1, 37, 80), state)  # any frame count
        >>> lp.shape  # 37 frames give 9 encoder frames: 2 complete chunks, 1 frame buffered
        torch.Size([1, 8, 29])
    """

    def __init__(
        self,
        vocab_size: int = 29,
        input_dim: int = 80,
        d_model: int = 144,
        num_layers: int = 6,
        num_heads: int = 4,
        ff_dim: int | None = None,
        conv_kernel_size: int = 15,
        subsampling_factor: int = 4,
        subsampling_channels: int | None = None,
        dropout: float = 0.1,
        streaming: bool = False,
        train_chunk_sizes: Sequence[int | None] | None = None,
        default_left_chunks: int = -1,
        conv_norm: str = "layer_norm",
    ) -> None:
        super().__init__()
        chunk_sizes = [None] if train_chunk_sizes is None else list(train_chunk_sizes)
        _check_config(d_model, num_heads, conv_kernel_size, streaming, chunk_sizes, conv_norm)
        self.vocab_size = vocab_size
        self.input_dim = input_dim
        self.subsampling_factor = subsampling_factor
        self.frame_shift_ms = _INPUT_FRAME_SHIFT_MS * subsampling_factor
        self.streaming = streaming
        self.train_chunk_sizes = [None if c is None else int(c) for c in chunk_sizes]
        self.default_left_chunks = default_left_chunks
        self.d_model = d_model
        self.num_heads = num_heads
        self.subsampling = Conv2dSubsampling(
            input_dim, d_model, subsampling_factor, subsampling_channels or d_model
        )
        self.input_dropout = Dropout(dropout)
        layer_args = (d_model, num_heads, ff_dim or 4 * d_model, conv_kernel_size, dropout)
        self.layers = nn.ModuleList(
            _ConformerLayer(*layer_args, causal=streaming, conv_norm=conv_norm)
            for _ in range(num_layers)
        )
        self.ctc = nn.Linear(d_model, vocab_size)
        # Global CMVN as buffers (WeNet's GlobalCMVN): a checkpoint decodes raw fbank by itself.
        self.register_buffer("cmvn_mean", torch.zeros(input_dim))
        self.register_buffer("cmvn_std", torch.ones(input_dim))
        cos, sin = _rotary_table(1024, d_model // num_heads)
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)

    # ----------------------------------------------------------------- public API
    def set_cmvn(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Global CMVN statistics (F,) each, applied to the raw fbank before anything else."""
        mean, std = torch.as_tensor(mean).float(), torch.as_tensor(std).float()
        if mean.shape != self.cmvn_mean.shape or std.shape != self.cmvn_std.shape:
            raise ValueError(
                f"CMVN shapes mean {tuple(mean.shape)}, std {tuple(std.shape)} != "
                f"({self.input_dim},) expected by input_dim={self.input_dim}"
            )
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std.clamp_min(1e-5))  # a constant bin must not divide by zero

    def sample_chunk_size(self) -> int | None:
        """One draw (uniform, torch RNG) from ``train_chunk_sizes``: dynamic chunk training."""
        return self.train_chunk_sizes[int(torch.randint(len(self.train_chunk_sizes), ()))]

    def resolve_left_chunks(self, requested: int | None = None) -> int:
        """The left context to use: ``requested``, or when None (``left_chunks=null`` in a
        config, no ``--left-chunks``) the ``default_left_chunks`` the model was trained with."""
        return self.default_left_chunks if requested is None else int(requested)

    def forward(
        self,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        chunk_size: int | None = None,
        left_chunks: int = -1,
        return_hidden: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Encode a padded batch.

        Args:
            feats: (B, T, F) raw fbank, zero-padded.
            feat_lens: (B,) valid frames.
            chunk_size: chunk attention in encoder frames; None = full context. Ignored, with a
                warning, by a full-context model (its convolutions look ahead anyway).
            left_chunks: chunks of left context, -1 = unlimited.
            return_hidden: also return every Conformer layer's output (for hidden-state
                distillation and intermediate CTC heads; the same computation either way).

        Returns:
            log_probs: (B, T', V) CTC log-probabilities (log_softmax); frames >= out_lens are
                padding. out_lens: (B,) ``feat_lens // subsampling_factor``. With
                ``return_hidden``, a third item: a tuple of ``num_layers`` tensors (B, T', D),
                layer 1's output first (padding frames hold whatever the layer computed).
        """
        chunk_size = self._check_chunk_args(chunk_size, left_chunks)
        x, lens = self.subsampling(self._normalize(feats), feat_lens)
        x = self.input_dropout(x)
        t = x.size(1)
        if t == 0:  # every utterance shorter than one encoder frame
            empty = x.new_zeros(x.size(0), 0, self.vocab_size), lens
            return (*empty, (x,) * len(self.layers)) if return_hidden else empty
        att_mask = pad_mask = None
        # Whether the batch has padding is a host read: free on the CPU, a stall on a GPU, where
        # the masks are built anyway (same result: an all-True mask masks nothing)
        if chunk_size is not None or lens.device.type != "cpu" or bool((lens != t).any()):
            att_mask = attention_mask(lens, t, chunk_size, left_chunks).unsqueeze(1)
            pad_mask = padding_mask(lens, t)
        cos, sin = self._rotary(0, t)
        hidden = []
        for layer in self.layers:
            x, _, _ = layer(x, cos, sin, att_mask, pad_mask)
            hidden.append(x)
        log_probs = self.ctc(x).log_softmax(dim=-1)
        return (log_probs, lens, tuple(hidden)) if return_hidden else (log_probs, lens)

    def step_spec(self, chunk_size: int = 8, left_chunks: int = -1) -> StepSpec:
        """The streaming step at ``chunk_size`` encoder frames and ``left_chunks`` chunks of
        left context (-1 = unlimited): what ``forward_chunk``, the exported step graph and its
        runner share (``asr_kd.models.streaming``)."""
        if not self.streaming:
            raise ValueError(
                "init_state / step_spec: this ConformerCTC is full-context (streaming=False): "
                "it has no streaming step"
            )
        return StepSpec(
            chunk_size=int(chunk_size),
            left_chunks=int(left_chunks),
            subsampling_factor=self.subsampling.factor,
            receptive_field=self.subsampling.receptive_field,
            left_pad=self.subsampling.left_pad,
            input_dim=self.input_dim,
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            num_heads=self.num_heads,
            num_layers=len(self.layers),
            conv_context=self.layers[0].conv.context,
            inv_freq=tuple(rotary_frequencies(self.d_model // self.num_heads).tolist()),
        )

    def init_state(
        self, batch_size: int = 1, chunk_size: int = 8, left_chunks: int = -1
    ) -> StreamingState:
        """Empty streaming state for ``batch_size`` streams of equal length.

        Args:
            chunk_size: encoder frames per chunk (8 at 40 ms frames = 320 ms).
            left_chunks: attention left context in chunks, -1 = unlimited (grows with the audio).
        """
        spec = self.step_spec(chunk_size, left_chunks)
        layers, ref = spec.num_layers, self.cmvn_mean
        return StreamingState(
            spec=spec,
            offset=0,
            input_buffer=ref.new_zeros(batch_size, spec.left_pad, spec.input_dim),
            att_cache=ref.new_zeros(layers, batch_size, spec.num_heads, 0, 2 * spec.head_dim),
            cnn_cache=ref.new_zeros(layers, batch_size, spec.d_model, spec.conv_context),
        )

    @torch.inference_mode()
    def forward_chunk(
        self, feats_chunk: torch.Tensor, state: StreamingState
    ) -> tuple[torch.Tensor, StreamingState]:
        """Feed any number of new input frames; get the log-probs of every completed chunk.

        Args:
            feats_chunk: (B, t, F) raw fbank, t >= 0.
            state: from ``init_state`` or the previous call (not modified).

        Returns:
            log_probs (B, n * chunk_size, V) for the n chunks completed by this call (n may be 0)
            and the new state. Frames short of a complete chunk wait in the state; ``flush``
            emits them at the end of the utterance.
        """
        x = torch.cat((state.input_buffer, self._normalize(feats_chunk)), dim=1)
        n = state.spec.output_frames(x.size(1))
        return self._stream(x, n - n % state.chunk_size, state)

    @torch.inference_mode()
    def flush(self, state: StreamingState) -> tuple[torch.Tensor, StreamingState]:
        """End of utterance: emit the last, partial chunk (B, n < chunk_size, V) and the state."""
        x = state.input_buffer
        return self._stream(x, state.spec.output_frames(x.size(1)), state)

    # ----------------------------------------------------------------- helpers
    def _normalize(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.size(-1) != self.input_dim:
            raise ValueError(f"feats have {feats.size(-1)} bins, model input_dim={self.input_dim}")
        return (feats - self.cmvn_mean) / self.cmvn_std

    def _check_chunk_args(self, chunk_size: int | None, left_chunks: int) -> int | None:
        check_chunk_args(chunk_size, left_chunks)
        if chunk_size is not None and not self.streaming:
            warnings.warn(
                f"chunk_size={chunk_size} ignored: full-context ConformerCTC (streaming=False)",
                stacklevel=3,
            )
            return None
        return chunk_size

    def _rotary(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) (length, Dh) for absolute positions start..start+length-1."""
        if start + length > self.rotary_cos.size(0):
            # Grow the table (long streams); the values of existing positions do not change.
            with torch.inference_mode(False), torch.no_grad():
                size = max(2 * self.rotary_cos.size(0), start + length)
                ref = self.cmvn_mean
                cos, sin = _rotary_table(size, self.rotary_cos.size(1), ref.device)
                self.rotary_cos, self.rotary_sin = cos.to(ref.dtype), sin.to(ref.dtype)
        end = start + length
        return self.rotary_cos[start:end], self.rotary_sin[start:end]

    def _stream(self, x: torch.Tensor, n: int, state: StreamingState):
        """Subsample the first ``n`` encoder frames of buffer ``x`` (B, n_in, F) and encode them
        chunk by chunk; the rest of ``x`` stays buffered."""
        if n == 0:
            empty = x.new_zeros(x.size(0), 0, self.vocab_size)
            return empty, replace(state, input_buffer=x)
        spec = state.spec
        enc = self.subsampling.forward_valid(x[:, : spec.input_frames(n)])
        state = replace(state, input_buffer=x[:, spec.subsampling_factor * n :])
        outs = []
        for start in range(0, n, state.chunk_size):
            out, state = self._encode_chunk(enc[:, start : start + state.chunk_size], state)
            outs.append(out)
        return torch.cat(outs, dim=1), state

    def _encode_chunk(self, x: torch.Tensor, state: StreamingState):
        """One chunk (B, c, D) through all layers with the caches -> (B, c, V), new state."""
        c = x.size(1)
        cos, sin = self._rotary(state.offset, c)
        keep = state.spec.cached_frames  # cache frames the next chunk may see; None: all
        kvs, cnns = [], []
        for i, layer in enumerate(self.layers):
            x, kv, cnn = layer(
                x, cos, sin, att_cache=state.att_cache[i], cnn_cache=state.cnn_cache[i]
            )
            kvs.append(kv if keep is None else kv[:, :, max(0, kv.size(2) - keep) :])
            cnns.append(cnn)
        new_state = replace(
            state,
            offset=state.offset + c,
            att_cache=torch.stack(kvs),
            cnn_cache=torch.stack(cnns),
        )
        return self.ctc(x).log_softmax(dim=-1), new_state


def _check_config(d_model, num_heads, kernel_size, streaming, chunk_sizes, conv_norm) -> None:
    if d_model % num_heads or (d_model // num_heads) % 2:
        raise ConfigError(
            f"d_model {d_model} / num_heads {num_heads} must be an even integer (rotary halves)"
        )
    if conv_norm not in ("layer_norm", "batch_norm"):
        raise ConfigError(f"conv_norm must be 'layer_norm' or 'batch_norm', got {conv_norm!r}")
    if streaming and conv_norm == "batch_norm":
        raise ConfigError(
            "streaming=True needs conv_norm='layer_norm' (batch statistics see the future)"
        )
    if not streaming and kernel_size % 2 == 0:
        raise ConfigError(f"conv_kernel_size {kernel_size} must be odd for a full-context model")
    if not chunk_sizes or any(c is not None and int(c) <= 0 for c in chunk_sizes):
        raise ConfigError(
            f"train_chunk_sizes must be a non-empty list of ints > 0 or None, got {chunk_sizes}"
        )
    if not streaming and any(c is not None for c in chunk_sizes):
        raise ConfigError(
            f"train_chunk_sizes {chunk_sizes} given to a full-context model (streaming=False): "
            "use [null] or set streaming: true"
        )
