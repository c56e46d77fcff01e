"""``asr-kd-export``: a checkpoint -> ONNX graphs for ONNX Runtime (full context and streaming).

Two graphs per model, both batch 1 on 2-D ``(frames, channels)`` tensors, CMVN inside:

- ``full.onnx`` (any model): raw fbank ``feats (T, F)`` -> CTC log-probs ``(T // factor, V)``,
  dynamic ``T >= factor``; the same function as ``ConformerCTC.forward`` with full context.
- ``stream-c<C>-l<LC>.onnx`` (streaming models, one per chunk size): one chunk step of
  ``forward_chunk`` with fixed-size caches: ``C`` encoder frames, attention over the last
  ``Tc = LC * C`` cached frames plus the chunk (an additive mask hides the empty slots).

The graphs are not a trace of ``ConformerCTC``: they run its weights refolded for ONNX
(:mod:`asr_kd.export.fold`, which says why and how).

Metadata for the runner (:mod:`asr_kd.inference.onnx`) is a JSON string in the model's
``metadata_props["asr_kd"]``: tokenizer, frame shift, subsampling, CMVN mean (the raw value of a
left-pad frame), rotary frequencies, and for a step graph its ``StepSpec``
(:mod:`asr_kd.models.streaming`: chunk size, left chunks, input and cache names and shapes),
from which the runner rebuilds the same spec.

Usage:
    asr-kd-export ckpt=exp/student_kd/checkpoints/last.ckpt out_dir=exp/onnx/student_kd \\
        chunk_sizes_ms=[320] left_chunks=null       # null = the model's default_left_chunks
    asr-kd-export format=sherpa-onnx ckpt=... out_dir=exp/sherpa/student_kd   # asr_kd.export.sherpa
    asr-kd-export format=sherpa-onnx recognizer=offline ckpt=... out_dir=...  # OfflineRecognizer

    asr-kd-export ckpt=... out_dir=exp/onnx/student_kd quantize=int8   # + exp/onnx/student_kd/int8/

    # from Python: paths = export_checkpoint(load_model(ckpt), out_dir, chunk_sizes=[8])

``quantize=int8`` also writes the int8 graphs (:mod:`asr_kd.export.quantize`) into
``<out_dir>/int8/`` under the same names, checked against torch with
``quantize.INT8_TOLERANCE`` (``int8_tolerance``) instead of the fp32 ``tolerance``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from omegaconf import DictConfig
from torch import nn

from asr_kd.config import as_list, save_config
from asr_kd.errors import ConfigError
from asr_kd.export.fold import FoldedGraph
from asr_kd.export.graph import METADATA_KEY, OPSET, _metadata, _save  # noqa: F401 (re-exported)
from asr_kd.export.quantize import (
    DEFAULT_INT8_SCHEME,
    check_int8_scheme,
    check_quantize,
    quantize_dir,
)
from asr_kd.inference.factory import open_graph
from asr_kd.inference.onnx import (
    FULL_FILE,
    session_options,
    step_file_name,
)
from asr_kd.models.loading import LoadedModel, load_model
from asr_kd.models.streaming import chunk_frames

__all__ = [
    "FORMATS",
    "FULL_FILE",
    "TOLERANCE",
    "check_export",
    "export_checkpoint",
    "export_full",
    "export_step",
    "quantize_export",
    "run",
    "step_file_name",
]

TOLERANCE = 1e-3  # max |ORT - torch| log-prob difference accepted (measured: ~1e-5)
FORMATS = ("asr_kd", "sherpa-onnx")  # ours (asr_kd.inference.onnx) | sherpa_onnx recognizers


# ---------------------------------------------------------------------------- export
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
    return _save(FoldedGraph(model).eval(), (feats,), Path(path), names, meta)


def _check_left_chunks(loaded: LoadedModel, left_chunks: int) -> None:
    if left_chunks < 0:
        raise ConfigError(
            f"left_chunks={left_chunks}: the streaming ONNX step needs a finite attention cache "
            f"(left_chunks >= 0); model {loaded.path} default is "
            f"{loaded.model.default_left_chunks}. Pass left_chunks=N (or runtime=torch to "
            "asr-kd-evaluate)"
        )


def export_step(loaded: LoadedModel, path: str | Path, chunk_size: int, left_chunks: int) -> Path:
    """Chunk-step graph of a streaming model with fixed-size caches: the inputs and outputs of
    ``model.step_spec(chunk_size, left_chunks)`` (:mod:`asr_kd.models.streaming`)."""
    model = loaded.model.eval()
    if not model.streaming:
        raise ConfigError(f"{loaded.path}: a full-context model has no streaming step to export")
    if chunk_size <= 0:
        raise ConfigError(f"chunk_size must be > 0 encoder frames, got {chunk_size}")
    _check_left_chunks(loaded, left_chunks)
    spec = model.step_spec(chunk_size, left_chunks)
    meta = _metadata(loaded, kind="step", **spec.to_metadata())
    args = tuple(torch.zeros(shape) for shape in spec.input_shapes.values())
    names = {"input_names": list(spec.input_shapes), "output_names": list(spec.output_shapes)}
    return _save(FoldedGraph(model, spec).eval(), args, Path(path), names, meta)


def export_checkpoint(
    loaded: LoadedModel, out_dir: str | Path, chunk_sizes=(), left_chunks: int | None = None
) -> dict[str, Path]:
    """``full.onnx`` and, for a streaming model, one step graph per chunk size (encoder
    frames). ``left_chunks=None``: the model's ``default_left_chunks``. Returns name -> path."""
    out_dir = Path(out_dir)
    lc = loaded.model.resolve_left_chunks(left_chunks)
    if loaded.model.streaming and chunk_sizes:
        _check_left_chunks(loaded, lc)  # before any file is written
    paths = {"full": export_full(loaded, out_dir / FULL_FILE)}
    if loaded.model.streaming:
        for c in chunk_sizes:
            paths[f"stream-c{c}"] = export_step(loaded, out_dir / step_file_name(c, lc), c, lc)
    return paths


# ---------------------------------------------------------------------------- check
def _count_nodes(path: Path) -> int:
    """Nodes after ONNX Runtime's own graph optimisation with the runners' session options
    (what they execute)."""
    import onnxruntime as ort

    opts = session_options()
    opts.optimized_model_filepath = str(path.with_suffix(".ort-optimized.onnx"))
    opts.log_severity_level = 3  # not the warning that the saved graph is machine-specific
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    optimized = Path(opts.optimized_model_filepath)
    count = len(onnx.load(str(optimized)).graph.node)
    optimized.unlink()
    return count


def _streamed(model: nn.Module, runner, feats: torch.Tensor, piece: int = 37):
    """``feats`` (T, F) through torch ``forward_chunk`` + ``flush`` and through the step graph's
    runner (``accept`` + ``flush``), in the same odd-sized pieces, as a live feed cuts them:
    ``(1, T', V)`` torch log-probs and ``(T', V)`` ORT log-probs."""
    state = model.init_state(1, runner.chunk_size, runner.left_chunks)
    parts, pieces = [], []
    for start in range(0, feats.shape[0], piece):
        lp, state = model.forward_chunk(feats[None, start : start + piece], state)
        parts.append(lp[0])
        pieces.append(runner.accept(feats[start : start + piece].numpy()))
    parts.append(model.flush(state)[0][0])
    pieces.append(runner.flush())
    return torch.cat(parts)[None], np.concatenate(pieces)


@torch.inference_mode()
def check_export(loaded: LoadedModel, paths: dict[str, Path], frames: int = 403, seed: int = 0):
    """ORT vs torch on one random utterance (``frames`` or more: enough for every step graph's
    attention cache to fill and slide): max abs log-prob diff per graph (NaN if either is NaN).
    ``paths``: name -> graph, as ``export_checkpoint`` returns (``"full"``: ``full.onnx``)."""
    model = loaded.model.eval()
    runners = {name: open_graph(path, streaming=name != "full") for name, path in paths.items()}
    for name, runner in runners.items():  # long enough for the attention cache to slide
        if name != "full":
            span = runner.chunk_size * (runner.left_chunks + 2) * model.subsampling_factor
            frames = max(frames, span + model.subsampling.receptive_field)
    gen = torch.Generator().manual_seed(seed)
    feats = model.cmvn_mean + model.cmvn_std * torch.randn(frames, model.input_dim, generator=gen)
    diffs = {}
    for name, runner in runners.items():
        path = paths[name]
        if name == "full":
            ref, _ = model(feats[None], torch.tensor([frames]))
            got = runner.log_probs(feats.numpy())
        else:
            ref, got = _streamed(model, runner, feats)
        if got.shape != tuple(ref.shape[1:]):
            raise AssertionError(f"{path}: ORT output {got.shape} != torch {tuple(ref.shape[1:])}")
        diffs[name] = float(np.abs(got - ref[0].numpy()).max())
    return diffs


def _summary(paths: dict[str, Path], diffs: dict[str, float], suffix: str = "") -> dict:
    return {
        name + suffix: {
            "path": str(path),
            "max_abs_diff": diffs[name],
            "nodes": _count_nodes(path),
            "mb": round(path.stat().st_size / 2**20, 3),
        }
        for name, path in paths.items()
    }


def _check_tolerance(ckpt, summary: dict, tolerance: float, what: str = "ONNX export") -> None:
    bad = {k: v["max_abs_diff"] for k, v in summary.items() if not v["max_abs_diff"] <= tolerance}
    if bad:  # NaN is bad too
        raise RuntimeError(f"{what} of {ckpt} differs from torch by {bad} > tolerance {tolerance}")


def quantize_export(
    loaded: LoadedModel,
    paths: dict[str, Path],
    out_dir: Path,
    check=check_export,
    scheme: str = DEFAULT_INT8_SCHEME,
) -> tuple:
    """int8 copies of the graphs ``paths`` (name -> fp32 graph in ``out_dir``), in
    ``out_dir/int8`` with int8 ``scheme``, and their max log-prob difference to torch by
    ``check(loaded, paths)``: ``({name: int8 path}, {name: diff})``."""
    int8 = quantize_dir(out_dir, scheme=scheme)
    int8_paths = {name: int8[path.name] for name, path in paths.items()}
    return int8_paths, check(loaded, int8_paths)


def _check_sherpa_paths(loaded: LoadedModel, paths: dict[str, Path]) -> dict[str, float]:
    from asr_kd.export.sherpa import check_sherpa

    return {name: check_sherpa(loaded, path) for name, path in paths.items()}


def run(cfg: DictConfig) -> dict:
    """Export ``cfg.ckpt`` into ``cfg.out_dir`` in ``cfg.format`` (and its int8 copy with
    ``quantize=int8``), check it against torch, return a summary (name -> path, diff, nodes,
    MB)."""
    from asr_kd.export.sherpa import RECOGNIZERS, export_checked

    out_dir = Path(cfg.out_dir)
    if cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {cfg.format!r}")
    recognizer = str(cfg.get("recognizer", "auto"))
    if recognizer not in RECOGNIZERS:
        raise ConfigError(f"recognizer must be one of {RECOGNIZERS}, got {recognizer!r}")
    if recognizer != "auto" and cfg.format != "sherpa-onnx":
        raise ConfigError(
            f"recognizer={recognizer} is an option of format=sherpa-onnx; format={cfg.format} "
            "writes full.onnx and the step graphs: drop recognizer or pass format=sherpa-onnx"
        )
    quantize = check_quantize(str(cfg.get("quantize", "none")))
    scheme = check_int8_scheme(str(cfg.get("int8_scheme", DEFAULT_INT8_SCHEME)))
    save_config(cfg, out_dir)
    loaded = load_model(cfg.ckpt)
    steps = loaded.model.streaming and recognizer != "offline"  # chunk sizes matter only there
    chunk_ms = as_list(cfg.chunk_sizes_ms) if steps else []
    chunk_sizes = [chunk_frames(loaded.model, ms, source=str(loaded.path)) for ms in chunk_ms]
    if cfg.format == "sherpa-onnx":
        paths, diffs = export_checked(loaded, out_dir, chunk_sizes, cfg.left_chunks, recognizer)
        check = _check_sherpa_paths
    else:
        paths = export_checkpoint(loaded, out_dir, chunk_sizes, cfg.left_chunks)
        diffs, check = check_export(loaded, paths), check_export
    summary = _summary(paths, diffs)
    int8_summary = {}
    if quantize == "int8":
        int8 = quantize_export(loaded, paths, out_dir, check, scheme)
        int8_summary = _summary(*int8, suffix=" int8")
    (out_dir / "export.json").write_text(json.dumps({**summary, **int8_summary}, indent=2) + "\n")
    _check_tolerance(cfg.ckpt, summary, cfg.tolerance)
    _check_tolerance(cfg.ckpt, int8_summary, cfg.int8_tolerance, "int8 export")
    return {**summary, **int8_summary}
