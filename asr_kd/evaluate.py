"""``asr-kd-evaluate``: WER/CER, RTF, latency and size of one or more checkpoints, one table.

For each subset and each checkpoint it decodes

- ``full``: the whole utterance at once (full context), batched, greedy CTC. Its ``rtf`` is
  measured separately, one utterance at a time on one CPU thread, so that a full-context teacher
  and a streaming student are compared at the same thread count; ``rtf_batch`` is the batched
  figure.
- ``stream-<N>ms`` (streaming models only, one row per ``chunk_sizes_ms`` entry): the real
  streaming path, ``init_state`` then ``forward_chunk`` on N ms feature chunks with caches
  (``StreamingGreedyDecoder``), batch size 1, one CPU thread, after warm-up.

``runtime`` picks what runs the batch-1 passes (their RTF, and the WER/CER of every row):
``torch`` (eager) or ``onnx``: each checkpoint is exported by ``asr_kd.export`` into
``<out_dir>/onnx/<name>/`` (full-context graph + one chunk-step graph per chunk size), checked
against torch, and run by ONNX Runtime with ``rtf.threads`` intra-op threads, so teacher and
students are timed in the same runtime. ``rtf_batch`` stays torch. Both runtimes decode through
``asr_kd.inference.factory.make_decoder``, as ``asr-kd-transcribe`` does, and are timed by
``asr_kd.inference.timing``.

RTF = processing seconds / audio seconds, where processing covers the model and the greedy
search on precomputed fbank features (data loading and feature extraction are not timed) and
audio seconds are fbank frames x 10 ms.

Writes into ``out_dir``: ``results.json`` (``{"rows": [...], "meta": {...}}``, one row per
(model, subset, mode)), ``results.md``, ``wer_vs_latency.png``, ``wer_vs_macs.png``,
``hyps/<model>.<subset>.<mode>.tsv`` (cut id, reference, hypothesis) and ``config.yaml``.
A transformers CTC model (``checkpoints.<name>=hf:<dir|hub id>[@revision]``, e.g. the public
teacher a student was distilled from) gets a ``full`` row too, always run in torch (it is not
exported to ONNX: its row says ``runtime: torch`` whatever ``runtime`` is): WER/CER from batched
decoding of the cuts' 16 kHz audio; ``rtf`` batch size 1 on ``rtf.threads`` threads, timing its
own feature extractor with the model and the greedy search (its features are part of it; our
students' fbank is not timed); ``macs_per_audio_s`` counted on 10 s of audio through the model
(the feature extractor, numpy or a mel, not counted); ``params`` and ``model_mb`` of its weights.

When ``<data.dir>/prepare_report.json`` exists, ``meta["prepare"]`` gives per evaluated subset
how many cuts ``asr-kd-prepare`` dropped and why (and the subset's heading in ``results.md``
says so when any were), so a WER over fewer utterances than the corpus holds is visible.

Usage:
    asr-kd-evaluate checkpoints.teacher=exp/teacher/checkpoints/last.ckpt \\
        checkpoints.student_kd=exp/student_kd/checkpoints/last.ckpt \\
        checkpoints.student_ctc=exp/student_ctc/checkpoints/last.ckpt \\
        data.dir=exp/data subsets=[test] chunk_sizes_ms=[160,320,640] out_dir=exp/demo
    asr-kd-evaluate +checkpoints.my_model=path/to.ckpt data.dir=DATA subsets=[dev,test]

    # from Python (tests): results = evaluate(compose("evaluate", [...overrides]))
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import onnxruntime
import torch
from omegaconf import DictConfig

import asr_kd
from asr_kd.config import as_list, save_config
from asr_kd.data.datamodule import AsrDataModule
from asr_kd.data.prepare import prepare_skips
from asr_kd.data.teacher_vocab import is_hf_source
from asr_kd.errors import ConfigError, MissingFileError
from asr_kd.export.onnx import TOLERANCE, check_export, export_checkpoint
from asr_kd.inference.factory import RUNTIMES, Decoder, make_decoder
from asr_kd.inference.timing import (
    Decoded,
    audio_utterances,
    decode_full_batched,
    decode_one_at_a_time,
    utterances,
)
from asr_kd.metrics import error_rates
from asr_kd.models.hf import HFLoaded, hf_macs_per_audio_second
from asr_kd.models.loading import LoadedModel, load_model
from asr_kd.models.profile import (
    algorithmic_latency_ms,
    count_params,
    macs_per_audio_second,
    model_size_mb,
)
from asr_kd.models.streaming import chunk_frames
from asr_kd.report import render_markdown, write_report

__all__ = ["evaluate", "summary"]

RTF_SCOPE = "model + greedy CTC search on precomputed fbank; feature extraction not timed"


def _batches(cfg: DictConfig, dm, subset: str) -> Iterator[dict]:
    yield from dm.dataloader(subset, shuffle=False, max_duration=float(cfg.data.max_duration))


def _timing(cfg: DictConfig) -> dict:
    return {"threads": int(cfg.rtf.threads), "warmup_utts": int(cfg.rtf.warmup_utts)}


def _onnx_dir(cfg: DictConfig, name: str) -> Path:
    return Path(cfg.out_dir) / "onnx" / name


def _decoder(
    cfg: DictConfig,
    name: str,
    loaded: LoadedModel,
    chunk_size: int | None = None,
    left_chunks: int | None = None,
) -> Decoder:
    """The batch-1 decoder of model ``name`` in ``cfg.runtime`` (offline if ``chunk_size`` is
    None): the checkpoint (torch), or the graphs ``_export_onnx`` wrote to
    ``<out_dir>/onnx/<name>/`` (onnx)."""
    return make_decoder(
        str(cfg.runtime),
        loaded=loaded,
        onnx=_onnx_dir(cfg, name),
        chunk_size=chunk_size,
        left_chunks=left_chunks,
        threads=int(cfg.rtf.threads),
    )


def _chunk_frames(loaded: LoadedModel, name: str, chunk_ms: float) -> int:
    return chunk_frames(loaded.model, chunk_ms, source=f"model {name} ({loaded.path})")


def _model_figures(loaded: LoadedModel, chunk_size: int | None, left_chunks: int = -1) -> dict:
    model = loaded.model
    return {
        "latency_ms": algorithmic_latency_ms(model, chunk_size),
        "params": count_params(model),
        "macs_per_audio_s": macs_per_audio_second(model, chunk_size, left_chunks),
        "model_mb": model_size_mb(model),
    }


def _row(name: str, subset: str, mode: str, scored: Decoded, timed: Decoded, **extra) -> dict:
    refs = [scored.refs[k] for k in sorted(scored.refs)]
    hyps = [scored.hyps[k] for k in sorted(scored.refs)]
    rates = error_rates(refs, hyps)
    row = {"model": name, "subset": subset, "mode": mode}
    row.update({k: rates[k] for k in ("wer", "cer", "sub", "del", "ins")})
    row.update(rtf=timed.rtf, **extra)
    row.update(num_utts=len(refs), audio_s=round(scored.audio_s, 3), ref_words=rates["ref_words"])
    return row


def _write_hyps(out_dir: Path, row: dict, decoded: Decoded) -> None:
    path = out_dir / "hyps" / f"{row['model']}.{row['subset']}.{row['mode']}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k}\t{decoded.refs[k]}\t{decoded.hyps[k]}" for k in sorted(decoded.refs)]
    path.write_text("cut_id\treference\thypothesis\n" + "\n".join(lines) + "\n")


def _export_onnx(cfg: DictConfig, models: dict[str, LoadedModel]) -> dict:
    """runtime=onnx: export every model into ``<out_dir>/onnx/<name>/`` and check it against
    torch before any decoding; returns ``{name: {graph: max_abs_diff}}`` for the meta."""
    diffs = {}
    for name, loaded in models.items():
        if isinstance(loaded, HFLoaded):
            continue  # a transformers model runs in torch (its row says so)
        chunk_sizes = []
        if getattr(loaded.model, "streaming", False):
            chunk_sizes = [_chunk_frames(loaded, name, ms) for ms in cfg.chunk_sizes_ms]
        left_chunks = loaded.model.resolve_left_chunks(cfg.left_chunks)
        paths = export_checkpoint(loaded, _onnx_dir(cfg, name), chunk_sizes, left_chunks)
        diffs[name] = check_export(loaded, paths)
        bad = {g: d for g, d in diffs[name].items() if not d <= TOLERANCE}  # NaN is bad too
        if bad:
            raise RuntimeError(
                f"ONNX export of {name} ({loaded.path}) differs from torch by {bad} > {TOLERANCE}"
            )
    return diffs


def _hf_row(cfg: DictConfig, dm, name: str, loaded: HFLoaded, subset: str) -> dict:
    """A transformers model's ``full`` row, in torch on its audio (module doc)."""

    def batches():
        duration = float(cfg.data.max_duration)
        return dm.dataloader(subset, shuffle=False, max_duration=duration, with_audio=True)

    batched = decode_full_batched(loaded, batches(), cfg.device, f"{name} full")

    def decode(samples: torch.Tensor) -> str:
        return loaded.transcribe(samples[None], torch.tensor([samples.shape[0]]))[0]

    timed = decode_one_at_a_time(
        decode,
        audio_utterances(batches()),
        max_utts=cfg.rtf.max_utts,
        desc=f"{name} full, batch 1",
        total=None,
        **_timing(cfg),
    )
    row = _row(name, subset, "full", batched, timed, runtime="torch")
    row.update(rtf_batch=batched.rtf, batch_size=1, chunk_ms=None, left_chunks=None)
    row.update(threads=int(cfg.rtf.threads), threads_batch=torch.get_num_threads())
    model = loaded.model.hf
    row.update(latency_ms=None, params=count_params(model), model_mb=model_size_mb(model))
    row.update(macs_per_audio_s=hf_macs_per_audio_second(loaded.model))
    row.update(source=str(loaded.source), frame_shift_ms=loaded.model.frame_shift_ms)
    _write_hyps(Path(cfg.out_dir), row, batched)
    return row


def _full_row(cfg: DictConfig, dm, name: str, loaded: LoadedModel, subset: str) -> dict:
    """Full context: WER from batched decoding; RTF from batch size 1 on ``rtf.threads``."""
    batched = decode_full_batched(loaded, _batches(cfg, dm, subset), cfg.device, f"{name} full")
    max_utts = cfg.rtf.max_utts if cfg.runtime == "torch" else None  # onnx: all, for the WER
    timed = decode_one_at_a_time(
        _decoder(cfg, name, loaded),
        utterances(_batches(cfg, dm, subset)),
        max_utts=max_utts,
        desc=f"{name} full, batch 1",
        total=len(batched.refs) if max_utts is None else None,
        **_timing(cfg),
    )
    scored = batched if cfg.runtime == "torch" else timed  # WER of the runtime that is timed
    row = _row(name, subset, "full", scored, timed, runtime=str(cfg.runtime))
    row.update(rtf_batch=batched.rtf, batch_size=1, chunk_ms=None, left_chunks=None)
    row.update(threads=int(cfg.rtf.threads), threads_batch=torch.get_num_threads())
    row.update(_model_figures(loaded, None))
    _write_hyps(Path(cfg.out_dir), row, scored)
    return row


def _stream_row(
    cfg: DictConfig,
    dm,
    name: str,
    loaded: LoadedModel,
    subset: str,
    chunk_ms: float,
    num_utts: int | None,
) -> dict:
    """The streaming path at one chunk size: WER and RTF from the same batch-1 pass."""
    chunk_size, mode = _chunk_frames(loaded, name, chunk_ms), f"stream-{chunk_ms:g}ms"
    left_chunks = loaded.model.resolve_left_chunks(cfg.left_chunks)
    streamed = decode_one_at_a_time(
        _decoder(cfg, name, loaded, chunk_size, left_chunks),
        utterances(_batches(cfg, dm, subset)),
        max_utts=None,
        desc=f"{name} {mode}",
        total=num_utts,
        **_timing(cfg),
    )
    row = _row(name, subset, mode, streamed, streamed, runtime=str(cfg.runtime))
    row.update(rtf_batch=None, batch_size=1, chunk_ms=chunk_ms, left_chunks=left_chunks)
    row.update(threads=int(cfg.rtf.threads), threads_batch=None)
    row.update(_model_figures(loaded, chunk_size, left_chunks))
    _write_hyps(Path(cfg.out_dir), row, streamed)
    return row


def evaluate_model(cfg: DictConfig, dm, name: str, loaded: LoadedModel, subset: str) -> list[dict]:
    """All rows of one model on one subset: ``full`` and one ``stream-<N>ms`` per chunk size.

    Full-context-only models (``model.streaming`` false, e.g. the teacher) get ``full`` only.
    """
    if isinstance(loaded, HFLoaded):
        return [_hf_row(cfg, dm, name, loaded, subset)] if cfg.full_context else []
    rows = [_full_row(cfg, dm, name, loaded, subset)] if cfg.full_context else []
    if getattr(loaded.model, "streaming", False):
        num_utts = rows[0]["num_utts"] if rows else None  # progress-bar total
        for chunk_ms in cfg.chunk_sizes_ms:
            rows.append(_stream_row(cfg, dm, name, loaded, subset, chunk_ms, num_utts))
    return rows


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def _meta(cfg: DictConfig, checkpoints: dict[str, str]) -> dict:
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(),
        "torch": torch.__version__,
        "asr_kd": asr_kd.__version__,
        "python": platform.python_version(),
        "device": cfg.device,
        "batch_threads": torch.get_num_threads(),
        "batch_max_duration_s": float(cfg.data.max_duration),
        "rtf_threads": int(cfg.rtf.threads),
        "rtf_warmup_utts": int(cfg.rtf.warmup_utts),
        "rtf_scope": RTF_SCOPE,
        "runtime": str(cfg.runtime),
        "onnxruntime": onnxruntime.__version__ if cfg.runtime == "onnx" else None,
        "data_dir": str(cfg.data.dir),
        "subsets": list(cfg.subsets),
        "chunk_sizes_ms": list(cfg.chunk_sizes_ms),
        "checkpoints": checkpoints,
    }


def _checkpoints(cfg: DictConfig) -> dict[str, str]:
    """Named checkpoints given on the command line; ``null`` entries are unused name slots."""
    given = {str(k): str(v) for k, v in (cfg.checkpoints or {}).items() if v is not None}
    if not given:
        raise ConfigError(
            "no checkpoints to evaluate: pass checkpoints.teacher=PATH, checkpoints.student_kd=PATH,"
            " checkpoints.student_ctc=PATH or +checkpoints.<name>=PATH"
        )
    missing = {k: v for k, v in given.items() if not is_hf_source(v) and not Path(v).is_file()}
    if missing:
        raise MissingFileError(f"checkpoint files not found: {missing}")
    return given


def evaluate(cfg: DictConfig) -> dict:
    """Decode every (checkpoint, subset, mode), write the report, return ``{"rows", "meta"}``."""
    checkpoints = _checkpoints(cfg)
    for key in ("subsets", "chunk_sizes_ms"):  # subsets=test: one subset, not four letters
        cfg[key] = as_list(cfg[key])
    dm = AsrDataModule(cfg.data.dir, num_workers=int(cfg.data.num_workers))
    for subset in cfg.subsets:  # a subset that was never prepared fails now, not after the others
        dm.layout.prepared_cuts(subset)
    out_dir = Path(cfg.out_dir)
    save_config(cfg, out_dir)
    models = {name: load_model(path) for name, path in checkpoints.items()}
    _check_requests(cfg, models)
    onnx_diffs = _export_onnx(cfg, models) if cfg.runtime == "onnx" else None
    rows = []
    for subset in cfg.subsets:
        for name, loaded in models.items():
            rows += evaluate_model(cfg, dm, name, loaded, subset)
    results = {"rows": rows, "meta": _meta(cfg, checkpoints)}
    dropped = prepare_skips(cfg.data.dir, cfg.subsets)
    if dropped is not None:
        results["meta"]["prepare"] = dropped
    if onnx_diffs is not None:
        results["meta"]["onnx_max_abs_diff"] = onnx_diffs
    _write_results(results, out_dir, plots=bool(cfg.plots))
    return results


def _check_requests(cfg: DictConfig, models: dict[str, LoadedModel]) -> None:
    """Every chunk size fits every streaming model, and the runtime exists: fail before hours
    of decoding, not after."""
    for name, loaded in models.items():
        if getattr(loaded.model, "streaming", False):
            for chunk_ms in cfg.chunk_sizes_ms:
                _chunk_frames(loaded, name, chunk_ms)
    if cfg.runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be 'torch' or 'onnx', got {cfg.runtime!r}")


def _write_results(results: dict, out_dir: Path, plots: bool) -> None:
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if plots:
        write_report(results, out_dir)
    else:
        (out_dir / "results.md").write_text(render_markdown(results))


def summary(results: dict, out_dir: str) -> str:
    lines = [f"{'model':<14} {'subset':<10} {'mode':<14} {'WER':>7} {'CER':>7} {'RTF':>8}"]
    for r in results["rows"]:
        lines.append(
            f"{r['model']:<14} {r['subset']:<10} {r['mode']:<14} "
            f"{r['wer']:>7.2f} {r['cer']:>7.2f} {r['rtf']:>8.4f}"
        )
    lines.append(f"report: {out_dir}/results.md, results.json, plots")
    return "\n".join(lines)
