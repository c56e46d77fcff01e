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
        # (chunk_sizes_ms=null there: sherpa-onnx's default chunk, 16 frames / 4 left chunks)
    asr-kd-export format=sherpa-onnx recognizer=offline ckpt=... out_dir=...  # OfflineRecognizer

    asr-kd-export ckpt=... out_dir=exp/onnx/student_kd quantize=int8   # + exp/onnx/student_kd/int8/

    # from Python: paths = export_checkpoint(load_model(ckpt), out_dir, chunk_sizes=[8])
    checked = export_and_check(load_model(ckpt), out_dir, "asr_kd", [8], quantize="int8")
    checked.check("exp/student_kd")         # RuntimeError above the tolerances

``quantize=int8`` also writes the int8 graphs (:mod:`asr_kd.export.quantize`) into
``<out_dir>/int8/`` under the same names, checked against torch with
``quantize.INT8_TOLERANCE`` (``int8_tolerance``) instead of the fp32 ``tolerance``.

:func:`export_and_check` is the one way a checkpoint becomes checked graphs, in either format:
``asr-kd-export`` and ``asr-kd-evaluate`` (runtimes onnx and sherpa-onnx) both call it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
from asr_kd.export.limits import TOLERANCE, check_left_chunks, check_tolerance
from asr_kd.export.quantize import (
    DEFAULT_INT8_SCHEME,
    INT8_TOLERANCE,
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
    "INT8_SUFFIX",
    "TOLERANCE",
    "Checked",
    "check_export",
    "export_and_check",
    "export_checkpoint",
    "export_full",
    "export_step",
    "quantize_export",
    "run",
    "step_file_name",
]

INT8_SUFFIX = " int8"  # the name of a graph's int8 copy: "full int8", "stream-c8 int8"


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


def export_step(loaded: LoadedModel, path: str | Path, chunk_size: int, left_chunks: int) -> Path:
    """Chunk-step graph of a streaming model with fixed-size caches: the inputs and outputs of
    ``model.step_spec(chunk_size, left_chunks)`` (:mod:`asr_kd.models.streaming`)."""
    model = loaded.model.eval()
    if not model.streaming:
        raise ConfigError(f"{loaded.path}: a full-context model has no streaming step to export")
    if chunk_size <= 0:
        raise ConfigError(f"chunk_size must be > 0 encoder frames, got {chunk_size}")
    check_left_chunks(loaded, left_chunks, "asr_kd")
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
        check_left_chunks(loaded, lc, "asr_kd")  # before any file is written
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


def _summary(checked: Checked) -> dict:
    return {
        name: {
            "path": str(path),
            "max_abs_diff": checked.diffs[name],
            "nodes": _count_nodes(path),
            "mb": round(path.stat().st_size / 2**20, 3),
        }
        for name, path in checked.paths.items()
    }


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


# ---------------------------------------------------------------------------- formats
def _export_ours(loaded: LoadedModel, out_dir: Path, chunk_sizes, left_chunks, recognizer):
    return export_checkpoint(loaded, out_dir, chunk_sizes, left_chunks)


def _check_ours(loaded: LoadedModel, paths: dict[str, Path]) -> dict[str, float]:
    return check_export(loaded, paths)  # looked up when called: tests stand in for it


def _export_sherpa(loaded: LoadedModel, out_dir: Path, chunk_sizes, left_chunks, recognizer):
    from asr_kd.export.sherpa import export_sherpa_dir

    return export_sherpa_dir(loaded, out_dir, chunk_sizes, left_chunks, recognizer)


def _check_sherpa(loaded: LoadedModel, paths: dict[str, Path]) -> dict[str, float]:
    from asr_kd.export.sherpa import check_sherpa

    return {name: check_sherpa(loaded, path) for name, path in paths.items()}


# format -> (export into a directory, check the graphs against torch, what the errors call it);
# ours for asr_kd.inference.onnx, sherpa-onnx's WeNet CTC for its recognizers.
DEFAULT_CHUNK_MS = 320  # chunk_sizes_ms=null with format=asr_kd: the demo's streaming latency
_FORMATS = {
    "asr_kd": (_export_ours, _check_ours, "ONNX export"),
    "sherpa-onnx": (_export_sherpa, _check_sherpa, "sherpa-onnx export"),
}
FORMATS = tuple(_FORMATS)


@dataclass(frozen=True)
class Checked:
    """The graphs :func:`export_and_check` wrote (name -> file) and their max |ORT - torch|
    log-prob difference (name -> float, NaN if either is NaN); an int8 copy is named
    ``"<name> int8"``."""

    fmt: str
    paths: dict[str, Path]
    diffs: dict[str, float]

    def check(
        self, source: str, tolerance: float = TOLERANCE, int8_tolerance: float = INT8_TOLERANCE
    ) -> None:
        """``RuntimeError`` naming ``source`` when an fp32 graph is above ``tolerance`` or an
        int8 one above ``int8_tolerance``."""
        int8 = {k: d for k, d in self.diffs.items() if k.endswith(INT8_SUFFIX)}
        fp32 = {k: d for k, d in self.diffs.items() if k not in int8}
        check_tolerance(f"{_FORMATS[self.fmt][2]} of {source}", fp32, tolerance)
        check_tolerance(f"int8 export of {source}", int8, int8_tolerance)


def export_and_check(
    loaded: LoadedModel,
    out_dir: str | Path,
    fmt: str = "asr_kd",
    chunk_sizes=(),
    left_chunks: int | None = None,
    *,
    recognizer: str = "auto",
    quantize: str = "none",
    int8_scheme: str = DEFAULT_INT8_SCHEME,
) -> Checked:
    """Export ``loaded`` into ``out_dir`` in format ``fmt`` (``asr_kd``: ``full.onnx`` and one
    step graph per chunk size; ``sherpa-onnx``: ``model.onnx`` for ``recognizer``), and with
    ``quantize="int8"`` its int8 copies (``int8_scheme``) into ``out_dir/int8``, each checked
    against torch.
    ``chunk_sizes`` in encoder frames (None: sherpa-onnx's default chunk, that format only);
    ``left_chunks=None``: the model's default (sherpa-onnx's with its default chunk). It does not
    judge the differences: :meth:`Checked.check` does, once the caller has recorded them."""
    if fmt not in _FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
    export, check, _ = _FORMATS[fmt]
    out_dir = Path(out_dir)
    chunk_sizes = None if chunk_sizes is None else list(chunk_sizes)
    paths = export(loaded, out_dir, chunk_sizes, left_chunks, recognizer)
    diffs = check(loaded, paths)
    if check_quantize(quantize) == "int8":
        int8_paths, int8_diffs = quantize_export(loaded, paths, out_dir, check, int8_scheme)
        paths = {**paths, **{k + INT8_SUFFIX: p for k, p in int8_paths.items()}}
        diffs = {**diffs, **{k + INT8_SUFFIX: d for k, d in int8_diffs.items()}}
    return Checked(fmt, paths, diffs)


def _chunk_sizes(cfg: DictConfig, loaded: LoadedModel, recognizer: str) -> list[int] | None:
    """``cfg.chunk_sizes_ms`` in encoder frames; when null, [``DEFAULT_CHUNK_MS``] for our
    format and None (sherpa-onnx's own default chunk) for ``format=sherpa-onnx``."""
    if not loaded.model.streaming or recognizer == "offline":  # chunk sizes matter only there
        return []
    if cfg.chunk_sizes_ms is None:
        if cfg.format == "sherpa-onnx":
            return None
        chunk_ms = [DEFAULT_CHUNK_MS]
    else:
        chunk_ms = as_list(cfg.chunk_sizes_ms)
    return [chunk_frames(loaded.model, ms, source=str(loaded.path)) for ms in chunk_ms]


def run(cfg: DictConfig) -> dict:
    """Export ``cfg.ckpt`` into ``cfg.out_dir`` in ``cfg.format`` (and its int8 copy with
    ``quantize=int8``), check it against torch, return a summary (name -> path, diff, nodes,
    MB)."""
    from asr_kd.export.sherpa import RECOGNIZERS

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
    checked = export_and_check(
        loaded, out_dir, cfg.format, _chunk_sizes(cfg, loaded, recognizer), cfg.left_chunks,
        recognizer=recognizer, quantize=quantize, int8_scheme=scheme,
    )  # fmt: skip
    summary = _summary(checked)
    (out_dir / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    checked.check(str(cfg.ckpt), cfg.tolerance, cfg.int8_tolerance)  # refused ones recorded too
    return summary
