"""``ConformerCTC`` refolded for ONNX export: the same function in as few graph nodes as possible.

The graphs are not a trace of ``ConformerCTC``: they reuse its weights, refolded so that a
streaming step is as few ONNX nodes as possible: ONNX Runtime costs roughly 0.6-1 us per node on
one thread, about as much as the arithmetic of a 320 ms ``student_tiny`` chunk (~3.5 M MACs).
Measured on ``student_tiny``: 262 nodes / 0.30 ms per chunk for a plain 3-D export, 130 / 0.18
ms for this one (docs/deploy.md, "Export to ONNX"); per-head reshape attention (142 nodes) and fused
``SkipLayerNormalization`` (118) were both slower. The folds:

- each ``nn.Linear`` is one ``Gemm`` on ``(T, D)``; the FFN half-step ``0.5`` is in the weights;
- rotary positions: ``rotate_half(x) = sign * x[perm]``. With per-head query copies (small
  models) the permutation rides in the weights, ``rotate_half(x W^T) = x (R W)^T``, so one
  ``Gemm`` yields ``q, k, rot(q), rot(k), v`` and rotation is ``qk * cos + rot(qk) * sin``, no
  extra node; otherwise it is one ``Gather`` per layer that swaps the two halves of every head
  (``qk`` viewed as ``(T, 2H, 2, Dh/2)``: contiguous blocks, 2.4 x faster than a ``Gather`` of
  single columns), the sign folded into ``sin`` once per graph: the weights' copies would add 2/3
  to the ``qkv`` weights (7 % of a ``student_small`` graph) for no measurable speed
  (docs/deploy.md). ``cos``/``sin`` are graph
  inputs in the step graph (the runner slices ``StepSpec.rotary_table`` at the offset);
- step attention with all heads in one matrix (``StepSpec.head_copies``, small models): the
  queries' ``Gemm`` writes one copy of ``q`` per head, zeroed outside that head's columns, so
  ``(T*H, D) @ K^T`` gives every head's scores in one ``Gemm`` (mask added as its ``C`` input),
  and the output projection's weights, repeated per head and zeroed likewise, sum the heads
  back; larger models batch the heads instead (``(H, T, Dh) @ (H, Dh, Tc + T)``), as the
  full-context graph does, since the copies multiply those products by H;
- the causal depthwise conv of a chunk is one ``Gather`` of the K taps, a ``Mul`` and a
  ``ReduceSum``; its bias rides on an extra constant tap of ones;
- BatchNorm (full-context teachers) is folded into the depthwise conv.

The step graph's inputs and outputs (names, shapes, which output feeds which cache) are those of
its :class:`asr_kd.models.streaming.StepSpec`; the fold reads the model's parts by name
(``layer.ff1.linear2``, ``layer.attn.qkv``, ``layer.conv.depthwise``...).

Usage:
    graph = FoldedGraph(model).eval()                 # full context: feats (T, F) -> log-probs
    spec = model.step_spec(chunk_size=8, left_chunks=4)
    step = FoldedGraph(model, spec).eval()            # one chunk step with fixed-size caches
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asr_kd.models.conformer import rotary_frequencies
from asr_kd.models.streaming import StepSpec

__all__ = ["FoldedGraph"]


def _rotation(d_model: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(perm, sign) (D,) with ``rotate_half`` per head == ``sign * x[..., perm]``.

    >>> _rotation(4, 4)
    (tensor([2, 3, 0, 1]), tensor([-1., -1.,  1.,  1.]))
    """
    half = head_dim // 2
    col = torch.arange(d_model)
    first = (col % head_dim) < half
    perm = torch.where(first, col + half, col - half)
    return perm, torch.where(first, -1.0, 1.0)


def _parts(cache) -> tuple:
    """A cache tensor, or a tuple of its row blocks, as a tuple of blocks."""
    return tuple(cache) if isinstance(cache, (tuple, list)) else (cache,)


def _per_head_copies(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(D, ...) rows -> (H*D, ...): copy h keeps only head h's rows, the others are zero."""
    d = w.size(0)
    head = torch.arange(d) // (d // num_heads)
    keep = (head[None, :] == torch.arange(num_heads)[:, None]).to(w.dtype)  # (H, D)
    return (keep.view(num_heads, d, *([1] * (w.dim() - 1))) * w).reshape(
        num_heads * d, *w.shape[1:]
    )


class _GraphLayer(nn.Module):
    """One ``_ConformerLayer`` refolded for export (see the module docstring).

    ``step``: chunk-step graph (caches in/out, fixed ``C``), else the full-context graph;
    ``head_copies``: attention on per-head query copies (step graph only), else batched heads.
    """

    def __init__(self, layer: nn.Module, num_heads: int, step: bool, head_copies: bool) -> None:
        super().__init__()
        attn, conv = layer.attn, layer.conv
        d = attn.proj.out_features
        dh = d // num_heads
        self.step, self.d, self.num_heads, self.head_dim = step, d, num_heads, dh
        self.ff1_norm, self.ff2_norm = layer.ff1.norm, layer.ff2.norm
        self.ff1_in, self.ff2_in = layer.ff1.linear1, layer.ff2.linear1
        self.attn_norm, self.conv_norm_in, self.conv_in = attn.norm, conv.norm_in, conv.pointwise_in
        self.conv_out, self.final_norm = conv.pointwise_out, layer.norm
        with torch.no_grad():
            for name, linear in (("ff1_out", layer.ff1.linear2), ("ff2_out", layer.ff2.linear2)):
                self.register_buffer(f"{name}_w", 0.5 * linear.weight)
                self.register_buffer(f"{name}_b", 0.5 * linear.bias)
            w, b = attn.qkv.weight, attn.qkv.bias
            scale = 1.0 / math.sqrt(dh)  # SDPA's default, folded into the queries
            wq, wk, wv = (w[i * d : (i + 1) * d] for i in range(3))
            bq, bk, bv = (b[i * d : (i + 1) * d] for i in range(3))
            wq, bq = wq * scale, bq * scale
            perm, sign = _rotation(d, dh)

            def rot(t):
                return sign.view(-1, *([1] * (t.dim() - 1))) * t[perm]

            self.head_copies = step and head_copies
            wide = (lambda t: _per_head_copies(t, num_heads)) if self.head_copies else (lambda t: t)
            self.q_width = wide(wq).size(0)
            if self.head_copies:  # the rotation in the weights (module docstring)
                ws, bs = (
                    (wide(wq), wk, wide(rot(wq)), rot(wk), wv),
                    (wide(bq), bk, wide(rot(bq)), rot(bk), bv),
                )
            else:  # the rotation by a Gather that swaps each head's halves (forward)
                ws, bs = (wq, wk, wv), (bq, bk, bv)
                self.register_buffer("half_swap", torch.tensor([1, 0]))
            self.register_buffer("qkv_w", torch.cat(ws).contiguous())
            self.register_buffer("qkv_b", torch.cat(bs))
            pw = attn.proj.weight  # (D_out, D_in): heads are input columns
            self.register_buffer("proj_w", wide(pw.t()).t().contiguous())
            self.register_buffer("proj_b", attn.proj.bias.clone())
            dw_w, dw_b = conv.depthwise.weight[:, 0, :], conv.depthwise.bias  # (D, K), (D,)
            if conv.batch_norm:  # eval BatchNorm is a per-channel affine map: fold it
                bn = conv.norm_dw
                g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                dw_w, dw_b = dw_w * g[:, None], (dw_b - bn.running_mean) * g + bn.bias
            self.conv_norm = None if conv.batch_norm else conv.norm_dw
            self.kernel = dw_w.size(1)
            self.causal = conv.causal
            if step:  # taps (K + 1, D): the last one multiplies a constant row of ones
                self.register_buffer("taps_w", torch.cat((dw_w.t(), dw_b[None])).contiguous())
                self.register_buffer("ones", torch.ones(1, d))
            else:
                self.register_buffer("dw_w", dw_w[:, None, :].contiguous())
                self.register_buffer("dw_b", dw_b.clone())

    def _ff(self, x, norm, lin, w, b):
        return x + F.linear(F.silu(lin(norm(x))), w, b)

    def forward(self, x, cos, sin, mask=None, k_cache=None, v_cache=None, conv_cache=None):
        """x (T, D); cos, sin (T, q_width + D) -> x and the caches' sources by kind (the
        ``CacheSpec.kind``; step graph only, else {}): "k" K (Tc + T, D), "v" V (Tc + T, D),
        "conv" conv rows (K - 1 + T + 1, D), and the chunk's own rows of each, "k_new",
        "v_new" (T, D) and "conv_new" (T, D). A cache may come as a tuple of row blocks (the
        sherpa-onnx graph splits its caches so that it needs no slice of these outputs)."""
        d, h = self.d, self.num_heads
        x = self._ff(x, self.ff1_norm, self.ff1_in, self.ff1_out_w, self.ff1_out_b)
        qkv = F.linear(self.attn_norm(x), self.qkv_w, self.qkv_b)
        if self.head_copies:
            qk, qk_rot, v = qkv.split([self.q_width + d, self.q_width + d, d], dim=1)
        else:  # sin comes with rotate_half's signs (FoldedGraph.encode_layers)
            qk, v = qkv.split([2 * d, d], dim=1)
            halves = qk.reshape(-1, 2 * h, 2, self.head_dim // 2)  # (T, 2H, 2, Dh/2)
            qk_rot = halves[:, :, self.half_swap].reshape(-1, 2 * d)  # rotate_half, unsigned
        q, k = (qk * cos + qk_rot * sin).split([self.q_width, d], dim=1)
        if self.step:
            new = {"k_new": k, "v_new": v}
            k, v = torch.cat((*_parts(k_cache), k)), torch.cat((*_parts(v_cache), v))
        if self.head_copies:
            scores = torch.addmm(mask, q.reshape(-1, d), k.t())  # (T*H, Tc + T)
            att = (scores.softmax(-1) @ v).reshape(-1, h * d)  # head h's copy in block h
        else:
            q = q.reshape(-1, h, self.head_dim).transpose(0, 1)  # (H, T, Dh)
            kt = k.reshape(-1, h, self.head_dim).permute(1, 2, 0)  # (H, Dh, Tc + T)
            vh = v.reshape(-1, h, self.head_dim).transpose(0, 1)
            scores = q @ kt if mask is None else torch.baddbmm(mask, q, kt)
            att = (scores.softmax(-1) @ vh).transpose(0, 1).reshape(-1, d)
        x = x + F.linear(att, self.proj_w, self.proj_b)
        y = F.glu(self.conv_in(self.conv_norm_in(x)), dim=-1)  # (T, D)
        if self.step:
            new["conv_new"] = y
            rows = torch.cat((*_parts(conv_cache), y, self.ones))  # (K-1+T+1, D)
            y = (rows[self.tap_index] * self.taps_w).sum(1)  # (T, K+1, D) -> (T, D)
        else:
            pad = (self.kernel - 1, 0) if self.causal else ((self.kernel - 1) // 2,) * 2
            y = F.conv1d(F.pad(y.t()[None], pad), self.dw_w, self.dw_b, groups=d)[0].t()
        if self.conv_norm is not None:
            y = self.conv_norm(y)
        x = x + self.conv_out(F.silu(y))
        x = self.final_norm(self._ff(x, self.ff2_norm, self.ff2_in, self.ff2_out_w, self.ff2_out_b))
        return x, ({"k": k, "v": v, "conv": rows, **new} if self.step else {})

    def set_chunk(self, chunk_size: int) -> None:
        """Tap rows of the step graph: output t reads rows t..t+K-1, then the ones row."""
        taps = torch.arange(chunk_size)[:, None] + torch.arange(self.kernel)[None, :]
        ones = torch.full((chunk_size, 1), self.kernel - 1 + chunk_size)
        self.register_buffer("tap_index", torch.cat((taps, ones), dim=1))


class FoldedGraph(nn.Module):
    """The whole model for export: full context (``spec=None``) or the step of ``spec``
    (``model.step_spec(chunk_size, left_chunks)``, ``left_chunks >= 0``)."""

    def __init__(self, model: nn.Module, spec: StepSpec | None = None) -> None:
        super().__init__()
        self.spec, self.step = spec, spec is not None
        if self.step and spec != model.step_spec(spec.chunk_size, spec.left_chunks):
            raise ValueError(f"FoldedGraph: {spec} is not a step spec of this model")
        self.subsampling = model.subsampling
        self.ctc = model.ctc
        self.layers = nn.ModuleList(
            _GraphLayer(layer, model.num_heads, self.step, self.step and spec.head_copies)
            for layer in model.layers
        )
        head_dim = model.d_model // model.num_heads
        self.rotary_repeats = (self.layers[0].q_width + model.d_model) // head_dim
        if self.step:
            for layer in self.layers:
                layer.set_chunk(spec.chunk_size)
            if self.rotary_repeats != spec.rotary_repeats:  # the fold's query copies
                raise AssertionError(f"rotary tiles {self.rotary_repeats} != {spec}")
        self.register_buffer("cmvn_mean", model.cmvn_mean.clone())
        self.register_buffer("cmvn_inv_std", 1.0 / model.cmvn_std)
        self.register_buffer("inv_freq", rotary_frequencies(head_dim))  # (Dh,)
        _, sign = _rotation(model.d_model, head_dim)
        self.register_buffer("rot_sign", sign.repeat(2))  # rotate_half's signs over [q, k]

    def forward(self, feats, *inputs):
        """Full: feats (T, F) -> log_probs (T // factor, V).
        Step: the inputs of ``spec.input_shapes`` in order (feats (1, 1, window, F) raw, cos,
        sin, mask, then ``spec.caches``) -> the outputs of ``spec.output_shapes`` in order
        (log_probs (C, V), then each cache's source)."""
        return self.encode((feats - self.cmvn_mean) * self.cmvn_inv_std, *inputs)

    def encode(self, x, *inputs):
        """``forward`` after CMVN: ``x`` is the normalised ``feats`` (a left-pad frame is 0).
        The sherpa-onnx graph (:mod:`asr_kd.export.sherpa`) normalises its own input and calls
        ``encode_layers``."""
        sub = self.subsampling
        if self.step:
            cos, sin, mask, *caches = inputs
            caches = dict(zip((c.name for c in self.spec.caches), caches, strict=True))
        else:
            pos = torch.arange(x.shape[0] // sub.factor, dtype=torch.float32)
            x = F.pad(x[None, None], (0, 0, sub.left_pad, 0))
            angles = (pos[:, None] * self.inv_freq).repeat(1, self.rotary_repeats)
            cos, sin, mask, caches = angles.cos(), angles.sin(), None, {}
        log_probs, sources = self.encode_layers(x, cos, sin, mask, caches)
        specs = self.spec.caches if self.step else ()
        return (log_probs, *(sources[c.layer, c.kind] for c in specs))

    def encode_layers(self, x, cos, sin, mask, caches: dict):
        """Subsampling, layers, CTC head: ``x`` (1, 1, frames, F) normalised (left pad
        included), ``caches`` by ``CacheSpec.name`` (step graph; {} in full context) ->
        ``(log_probs (T', V), {(layer, kind): tensor})``, the kinds of ``_GraphLayer.forward``."""
        sub = self.subsampling
        x = sub.conv(x)  # (1, C, T', F')
        x = sub.out(x.permute(0, 2, 1, 3).reshape(-1, sub.out.in_features))  # (T', D)
        specs = self.spec.caches if self.step else ()
        if not self.layers[0].head_copies:  # rotate_half by a Gather: its signs, once
            sin = sin * self.rot_sign
        sources = {}
        for i, layer in enumerate(self.layers):
            mine = {f"{c.kind}_cache": caches[c.name] for c in specs if c.layer == i}
            x, new = layer(x, cos, sin, mask, **mine)
            sources.update({(i, kind): source for kind, source in new.items()})
        return self.ctc(x).log_softmax(-1), sources
