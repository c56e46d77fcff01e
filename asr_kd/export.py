"""``asr-kd-export``: a checkpoint -> ONNX graphs for ONNX Runtime (full context and streaming).

Two graphs per model, both batch 1 on 2-D ``(frames, channels)`` tensors, CMVN inside:

- ``full.onnx`` (any model): raw fbank ``feats (T, F)`` -> CTC log-probs ``(T // factor, V)``,
  dynamic ``T >= factor``; the same function as ``ConformerCTC.forward`` with full context.
- ``stream-c<C>-l<LC>.onnx`` (streaming models, one per chunk size): one chunk step of
  ``forward_chunk`` with fixed-size caches: ``C`` encoder frames, attention over the last
  ``Tc = LC * C`` cached frames plus the chunk (an additive mask hides the empty slots).

The graphs are not a trace of ``ConformerCTC``: they reuse its weights, refolded so that a
streaming step is as few ONNX nodes as possible: ONNX Runtime costs roughly 0.6-1 us per node on
one thread, about as much as the arithmetic of a 320 ms ``student_tiny`` chunk (~3.5 M MACs).
Measured on ``student_tiny``: 262 nodes / 0.30 ms per chunk for a plain 3-D export, 130 / 0.18
ms for this one (README, "Export to ONNX"); per-head reshape attention (142 nodes) and fused
``SkipLayerNormalization`` (118) were both slower. The folds:

- each ``nn.Linear`` is one ``Gemm`` on ``(T, D)``; the FFN half-step ``0.5`` is in the weights;
- rotary positions: ``rotate_half(x W^T) = x (R W)^T`` for a signed row permutation ``R``, so
  one ``Gemm`` yields ``q, k, rot(q), rot(k), v`` and rotation is ``qk * cos + rot(qk) * sin``;
  ``cos``/``sin`` are graph inputs in the step graph (the runner slices a table at the offset);
- step attention with all heads in one matrix: the queries' ``Gemm`` writes one copy of ``q``
  per head, zeroed outside that head's columns, so ``(T*H, D) @ K^T`` gives every head's scores
  in one ``Gemm`` (mask added as its ``C`` input), and the output projection's weights, repeated
  per head and zeroed likewise, sum the heads back;
- the causal depthwise conv of a chunk is one ``Gather`` of the K taps, a ``Mul`` and a
  ``ReduceSum``; its bias rides on an extra constant tap of ones;
- BatchNorm (full-context teachers) is folded into the depthwise conv.

Metadata for the runner (``asr_kd.onnx_runtime``) is a JSON string in the model's
``metadata_props["asr_kd"]``: tokenizer, frame shift, subsampling, chunk size, left chunks, input
and cache names and shapes, CMVN mean (the raw value of a left-pad frame), rotary frequencies.

Usage:
    asr-kd-export ckpt=exp/student_kd/checkpoints/last.ckpt out_dir=exp/onnx/student_kd \\
        chunk_sizes_ms=[320] left_chunks=null       # null = the model's default_left_chunks

    # from Python: paths = export_checkpoint(load_model(ckpt), out_dir, chunk_sizes=[8])
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import hydra
import numpy as np
import onnx
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from asr_kd.checkpoint import LoadedModel, load_model
from asr_kd.config import CONF_DIR, as_list
from asr_kd.models.conformer import rotary_frequencies

__all__ = [
    "FULL_FILE",
    "TOLERANCE",
    "check_export",
    "export_checkpoint",
    "export_full",
    "export_step",
    "main",
    "run",
    "step_file_name",
]

OPSET = 17
TOLERANCE = 1e-3  # max |ORT - torch| log-prob difference accepted (measured: ~1e-5)
METADATA_KEY = "asr_kd"
FULL_FILE = "full.onnx"


def step_file_name(chunk_size: int, left_chunks: int) -> str:
    return f"stream-c{chunk_size}-l{left_chunks}.onnx"


# ---------------------------------------------------------------------------- weight folding
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

    ``step``: chunk-step graph (caches in/out, fixed ``C``), else the full-context graph.
    """

    def __init__(self, layer: nn.Module, num_heads: int, step: bool) -> None:
        super().__init__()
        attn, conv = layer.attn, layer.conv
        d = attn.proj.out_features
        dh = d // num_heads
        self.step, self.d, self.num_heads, self.head_dim = step, d, num_heads, dh
        self.ff1_norm, self.ff2_norm = layer.ff1[0], layer.ff2[0]
        self.ff1_in, self.ff2_in = layer.ff1[1], layer.ff2[1]
        self.attn_norm, self.conv_norm_in, self.conv_in = attn.norm, conv.norm_in, conv.pointwise_in
        self.conv_out, self.final_norm = conv.pointwise_out, layer.norm
        with torch.no_grad():
            for name, linear in (("ff1_out", layer.ff1[4]), ("ff2_out", layer.ff2[4])):
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

            wide = (lambda t: _per_head_copies(t, num_heads)) if step else (lambda t: t)
            self.q_width = wide(wq).size(0)
            self.register_buffer(
                "qkv_w", torch.cat((wide(wq), wk, wide(rot(wq)), rot(wk), wv)).contiguous()
            )
            self.register_buffer("qkv_b", torch.cat((wide(bq), bk, wide(rot(bq)), rot(bk), bv)))
            pw = attn.proj.weight  # (D_out, D_in): heads are input columns
            self.register_buffer("proj_w", (wide(pw.t()).t() if step else pw).contiguous())
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
        """x (T, D); cos, sin (T, q_width + D) -> x, then in the step graph the caches' sources
        K (Tc + T, D), V (Tc + T, D), conv rows (K - 1 + T + 1, D)."""
        d, h = self.d, self.num_heads
        x = self._ff(x, self.ff1_norm, self.ff1_in, self.ff1_out_w, self.ff1_out_b)
        qk, qk_rot, v = F.linear(self.attn_norm(x), self.qkv_w, self.qkv_b).split(
            [self.q_width + d, self.q_width + d, d], dim=1
        )
        q, k = (qk * cos + qk_rot * sin).split([self.q_width, d], dim=1)
        if self.step:
            k, v = torch.cat((k_cache, k)), torch.cat((v_cache, v))
            scores = torch.addmm(mask, q.reshape(-1, d), k.t())  # (T*H, Tc + T)
            att = (scores.softmax(-1) @ v).reshape(-1, h * d)  # head h's copy in block h
        else:
            q = q.reshape(-1, h, self.head_dim).transpose(0, 1)  # (H, T, Dh)
            kt = k.reshape(-1, h, self.head_dim).permute(1, 2, 0)  # (H, Dh, T)
            vh = v.reshape(-1, h, self.head_dim).transpose(0, 1)
            att = ((q @ kt).softmax(-1) @ vh).transpose(0, 1).reshape(-1, d)
        x = x + F.linear(att, self.proj_w, self.proj_b)
        y = F.glu(self.conv_in(self.conv_norm_in(x)), dim=-1)  # (T, D)
        if self.step:
            rows = torch.cat((conv_cache, y, self.ones))  # (K-1+T+1, D)
            y = (rows[self.tap_index] * self.taps_w).sum(1)  # (T, K+1, D) -> (T, D)
        else:
            pad = (self.kernel - 1, 0) if self.causal else ((self.kernel - 1) // 2,) * 2
            y = F.conv1d(F.pad(y.t()[None], pad), self.dw_w, self.dw_b, groups=d)[0].t()
        if self.conv_norm is not None:
            y = self.conv_norm(y)
        x = x + self.conv_out(F.silu(y))
        x = self.final_norm(self._ff(x, self.ff2_norm, self.ff2_in, self.ff2_out_w, self.ff2_out_b))
        return (x, k, v, rows) if self.step else (x,)

    def set_chunk(self, chunk_size: int) -> None:
        """Tap rows of the step graph: output t reads rows t..t+K-1, then the ones row."""
        taps = torch.arange(chunk_size)[:, None] + torch.arange(self.kernel)[None, :]
        ones = torch.full((chunk_size, 1), self.kernel - 1 + chunk_size)
        self.register_buffer("tap_index", torch.cat((taps, ones), dim=1))


class _Graph(nn.Module):
    """The whole model for export: full context (``chunk_size=None``) or one chunk step."""

    def __init__(self, model: nn.Module, chunk_size: int | None = None) -> None:
        super().__init__()
        self.step = chunk_size is not None
        self.subsampling = model.subsampling
        self.ctc = model.ctc
        self.layers = nn.ModuleList(
            _GraphLayer(layer, model.num_heads, self.step) for layer in model.layers
        )
        if self.step:
            for layer in self.layers:
                layer.set_chunk(chunk_size)
        self.register_buffer("cmvn_mean", model.cmvn_mean.clone())
        self.register_buffer("cmvn_inv_std", 1.0 / model.cmvn_std)
        head_dim = model.d_model // model.num_heads
        self.register_buffer("inv_freq", rotary_frequencies(head_dim))  # (Dh,)
        self.rotary_repeats = (self.layers[0].q_width + model.d_model) // head_dim

    def forward(self, feats, *inputs):
        """Full: feats (T, F) -> log_probs (T // factor, V).
        Step: feats (1, 1, n_in, F) raw, cos, sin (C, W), mask (1, Tc + C), then per layer
        k_cache (Tc, D), v_cache (Tc, D), conv_cache (K-1, D) -> log_probs (C, V), then per
        layer K, V (Tc + C, D) and conv rows (K - 1 + C + 1, D): the runner's next caches are
        their rows [C:], [C:] and [C : C + K - 1]."""
        sub = self.subsampling
        x = (feats - self.cmvn_mean) * self.cmvn_inv_std
        if self.step:
            cos, sin, mask, *caches = inputs
        else:
            x = F.pad(x[None, None], (0, 0, sub.left_pad, 0))
            pos = torch.arange(feats.shape[0] // sub.factor, dtype=torch.float32)
            angles = (pos[:, None] * self.inv_freq).repeat(1, self.rotary_repeats)
            cos, sin, mask, caches = angles.cos(), angles.sin(), None, []
        x = sub.conv(x)  # (1, C, T', F')
        x = sub.out(x.permute(0, 2, 1, 3).reshape(-1, sub.out.in_features))  # (T', D)
        new_caches = []
        for i, layer in enumerate(self.layers):
            x, *new = layer(x, cos, sin, mask, *caches[3 * i : 3 * i + 3])
            new_caches += new
        return (self.ctc(x).log_softmax(-1), *new_caches)


# ---------------------------------------------------------------------------- export
def _metadata(loaded: LoadedModel, **extra) -> dict:
    model = loaded.model
    return {
        "tokenizer": loaded.tokenizer.to_dict(),
        "vocab_size": model.vocab_size,
        "input_dim": model.input_dim,
        "frame_shift_ms": model.frame_shift_ms,
        "input_frame_shift_ms": model.frame_shift_ms // model.subsampling_factor,
        "subsampling_factor": model.subsampling_factor,
        "receptive_field": model.subsampling.receptive_field,
        "left_pad": model.subsampling.left_pad,
        "streaming": bool(model.streaming),
        "role": loaded.role,
        "checkpoint": str(loaded.path),
        "cmvn_mean": model.cmvn_mean.tolist(),
        "inv_freq": rotary_frequencies(model.d_model // model.num_heads).tolist(),
        **extra,
    }


def _save(graph: nn.Module, args: tuple, path: Path, names: dict, meta: dict) -> Path:
    """torch.onnx.export (TorchScript exporter: no dynamo, fixed opset) + metadata.

    ``graph`` must already be in eval mode: the exporter restores the wrapper's training flag
    recursively afterwards, so a fresh (training-mode) wrapper would leave the wrapped model in
    training mode (dropout, BatchNorm batch statistics). That, not the graph, made a first
    teacher export look 14 nats off torch.
    """
    if graph.training:
        raise ValueError("export a module in eval mode (see _save's docstring)")
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints: intended constants
        torch.onnx.export(graph, args, buf, dynamo=False, opset_version=OPSET, **names)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def export_full(loaded: LoadedModel, path: str | Path) -> Path:
    """Full-context graph: ``feats (T, F)`` raw fbank -> ``log_probs (T // factor, V)``."""
    model = loaded.model.eval()
    meta = _metadata(loaded, kind="full", inputs=["feats"], outputs=["log_probs"])
    names = {
        "input_names": ["feats"],
        "output_names": ["log_probs"],
        "dynamic_axes": {"feats": {0: "frames"}, "log_probs": {0: "out_frames"}},
    }
    feats = torch.randn(8 * model.subsampling_factor + 3, model.input_dim)
    return _save(_Graph(model).eval(), (feats,), Path(path), names, meta)


def _step_shapes(model: nn.Module, chunk_size: int, left_chunks: int) -> dict[str, list[int]]:
    sub, d = model.subsampling, model.d_model
    cached = left_chunks * chunk_size
    width = (model.num_heads + 1) * d  # per-head query copies + keys
    shapes = {
        "feats": [1, 1, sub.factor * (chunk_size - 1) + sub.receptive_field, model.input_dim],
        "cos": [chunk_size, width],
        "sin": [chunk_size, width],
        "mask": [1, cached + chunk_size],
    }
    for i, layer in enumerate(model.layers):
        shapes.update({f"k_cache_{i}": [cached, d], f"v_cache_{i}": [cached, d]})
        shapes[f"conv_cache_{i}"] = [layer.conv.context, d]
    return shapes


def chunk_frames(
    model: nn.Module, chunk_ms: float, option: str = "chunk_sizes_ms entry", source: str = ""
) -> int:
    """A chunk size in ms -> encoder frames; ``ValueError`` unless it is a positive multiple of
    the model's output frame shift. ``option`` names the setting, ``source`` the model, in the
    message. Shared by export, evaluate and transcribe."""
    shift = model.frame_shift_ms
    frames = chunk_ms / shift
    if frames < 1 or frames != int(frames):
        raise ValueError(
            f"{option} {chunk_ms} is not a positive multiple of the output frame shift "
            f"{shift} ms of {source or 'the model'}"
        )
    return int(frames)


def _check_left_chunks(loaded: LoadedModel, left_chunks: int) -> None:
    if left_chunks < 0:
        raise ValueError(
            f"left_chunks={left_chunks}: the streaming ONNX step needs a finite attention cache "
            f"(left_chunks >= 0); model {loaded.path} default is "
            f"{loaded.model.default_left_chunks}. Pass left_chunks=N (or runtime=torch to "
            "asr-kd-evaluate)"
        )


def export_step(loaded: LoadedModel, path: str | Path, chunk_size: int, left_chunks: int) -> Path:
    """Chunk-step graph of a streaming model with fixed-size caches (see ``_Graph.forward``)."""
    model = loaded.model.eval()
    if not model.streaming:
        raise ValueError(f"{loaded.path}: a full-context model has no streaming step to export")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0 encoder frames, got {chunk_size}")
    _check_left_chunks(loaded, left_chunks)
    shapes = _step_shapes(model, chunk_size, left_chunks)
    outputs = ["log_probs"]
    for i in range(len(model.layers)):
        outputs += [f"k_all_{i}", f"v_all_{i}", f"conv_all_{i}"]
    meta = _metadata(
        loaded,
        kind="step",
        chunk_size=chunk_size,
        left_chunks=left_chunks,
        num_layers=len(model.layers),
        input_shapes=shapes,
        inputs=list(shapes),
        outputs=outputs,
    )
    args = tuple(torch.zeros(shape) for shape in shapes.values())
    names = {"input_names": list(shapes), "output_names": outputs}
    return _save(_Graph(model, chunk_size).eval(), args, Path(path), names, meta)


def export_checkpoint(
    loaded: LoadedModel, out_dir: str | Path, chunk_sizes=(), left_chunks: int | None = None
) -> dict[str, Path]:
    """``full.onnx`` and, for a streaming model, one step graph per chunk size (encoder
    frames). ``left_chunks=None``: the model's ``default_left_chunks``. Returns name -> path."""
    out_dir = Path(out_dir)
    lc = loaded.model.default_left_chunks if left_chunks is None else int(left_chunks)
    if loaded.model.streaming and chunk_sizes:
        _check_left_chunks(loaded, lc)  # before any file is written
    paths = {"full": export_full(loaded, out_dir / FULL_FILE)}
    if loaded.model.streaming:
        for c in chunk_sizes:
            paths[f"stream-c{c}"] = export_step(loaded, out_dir / step_file_name(c, lc), c, lc)
    return paths


# ---------------------------------------------------------------------------- check
def _count_nodes(path: Path) -> int:
    """Nodes after ONNX Runtime's own graph optimisation (what it executes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(path.with_suffix(".ort-optimized.onnx"))
    opts.log_severity_level = 3  # not the warning that the saved graph is machine-specific
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    optimized = Path(opts.optimized_model_filepath)
    count = len(onnx.load(str(optimized)).graph.node)
    optimized.unlink()
    return count


@torch.inference_mode()
def check_export(loaded: LoadedModel, paths: dict[str, Path], frames: int = 403, seed: int = 0):
    """ORT vs torch on one random utterance (``frames`` or more: enough for every step graph's
    attention cache to fill and slide): max abs log-prob diff per graph (NaN if either is NaN)."""
    from asr_kd.onnx_runtime import OnnxCTC, OnnxStreamingCTC

    model = loaded.model.eval()
    runners = {name: OnnxStreamingCTC(path) for name, path in paths.items() if name != "full"}
    for runner in runners.values():  # long enough for the attention cache to slide
        span = runner.chunk_size * (runner.left_chunks + 2) * model.subsampling_factor
        frames = max(frames, span + model.subsampling.receptive_field)
    gen = torch.Generator().manual_seed(seed)
    feats = model.cmvn_mean + model.cmvn_std * torch.randn(frames, model.input_dim, generator=gen)
    diffs = {}
    for name, path in paths.items():
        if name == "full":
            ref, _ = model(feats[None], torch.tensor([frames]))
            got = OnnxCTC(path).log_probs(feats.numpy())
        else:
            runner = runners[name]
            state = model.init_state(1, runner.chunk_size, runner.left_chunks)
            parts, pieces = [], []
            for start in range(0, frames, 37):  # odd-sized pieces, as a live feed
                lp, state = model.forward_chunk(feats[None, start : start + 37], state)
                parts.append(lp[0])
                pieces.append(runner.accept(feats[start : start + 37].numpy()))
            parts.append(model.flush(state)[0][0])
            pieces.append(runner.flush())
            ref, got = torch.cat(parts)[None], np.concatenate(pieces)
        if got.shape != tuple(ref.shape[1:]):
            raise AssertionError(f"{path}: ORT output {got.shape} != torch {tuple(ref.shape[1:])}")
        diffs[name] = float(np.abs(got - ref[0].numpy()).max())
    return diffs


def run(cfg: DictConfig) -> dict:
    """Export ``cfg.ckpt`` into ``cfg.out_dir``, check it against torch, return a summary."""
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    loaded = load_model(cfg.ckpt)
    chunk_ms = as_list(cfg.chunk_sizes_ms) if loaded.model.streaming else []
    chunk_sizes = [chunk_frames(loaded.model, ms, source=str(loaded.path)) for ms in chunk_ms]
    paths = export_checkpoint(loaded, out_dir, chunk_sizes, cfg.left_chunks)
    diffs = check_export(loaded, paths)
    summary = {
        name: {
            "path": str(path),
            "max_abs_diff": diffs[name],
            "nodes": _count_nodes(path),
            "mb": round(path.stat().st_size / 2**20, 3),
        }
        for name, path in paths.items()
    }
    (out_dir / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    bad = {
        k: v["max_abs_diff"] for k, v in summary.items() if not v["max_abs_diff"] <= cfg.tolerance
    }
    if bad:
        raise RuntimeError(
            f"ONNX export of {cfg.ckpt} differs from torch by {bad} > tolerance {cfg.tolerance}"
        )
    return summary


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    for name, s in run(cfg).items():
        print(
            f"{name:<10} {s['path']}  max|ORT - torch| {s['max_abs_diff']:.2e}  "
            f"nodes {s['nodes']}  {s['mb']:.2f} MB"
        )
