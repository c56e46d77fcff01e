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
against torch, and run by ONNX Runtime (``asr_kd.onnx_runtime``) with ``rtf.threads`` intra-op
threads, so teacher and students are timed in the same runtime. ``rtf_batch`` stays torch.

RTF = processing seconds / audio seconds, where processing covers the model and the greedy
search on precomputed fbank features (data loading and feature extraction are not timed) and
audio seconds are fbank frames x 10 ms.

Writes into ``out_dir``: ``results.json`` (``{"rows": [...], "meta": {...}}``, one row per
(model, subset, mode)), ``results.md``, ``wer_vs_latency.png``, ``wer_vs_macs.png``,
``hyps/<model>.<subset>.<mode>.tsv`` (cut id, reference, hypothesis) and ``config.yaml``.
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
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import onnxruntime
import torch
from omegaconf import DictConfig
from tqdm import tqdm

import asr_kd
from asr_kd.config import as_list, save_config
from asr_kd.data.datamodule import AsrDataModule, cuts_file
from asr_kd.data.features import FRAME_SHIFT_MS
from asr_kd.data.prepare import KEPT_REASONS
from asr_kd.errors import ConfigError, MissingFileError
from asr_kd.export.onnx import TOLERANCE, check_export, export_checkpoint
from asr_kd.inference.decoders import StreamingGreedyDecoder, feed_chunks
from asr_kd.inference.onnx import (
    FULL_FILE,
    OnnxCTC,
    OnnxStreamingCTC,
    OnnxStreamingDecoder,
    step_file_name,
)
from asr_kd.metrics import Timer, error_rates, real_time_factor
from asr_kd.models.decode import greedy_ctc
from asr_kd.models.loading import LoadedModel, load_model
from asr_kd.models.profile import (
    algorithmic_latency_ms,
    count_params,
    macs_per_audio_second,
    model_size_mb,
)
from asr_kd.models.streaming import chunk_frames
from asr_kd.report import render_markdown, write_report

__all__ = ["Utterance", "evaluate", "prepare_skips", "summary", "utterance_decoder"]

RTF_SCOPE = "model + greedy CTC search on precomputed fbank; feature extraction not timed"
PREPARE_REPORT = "prepare_report.json"  # written by asr-kd-prepare into the data dir


@dataclass
class Utterance:
    """One test utterance: raw fbank ``feats`` (T, 80) and its normalised reference text."""

    cut_id: str
    text: str
    feats: torch.Tensor

    @property
    def audio_s(self) -> float:
        return self.feats.shape[0] * FRAME_SHIFT_MS / 1000.0


@dataclass
class Decoded:
    """Hypotheses of one decoding pass, keyed by cut id, with the timing that produced them."""

    hyps: dict[str, str]
    refs: dict[str, str]
    seconds: float
    audio_s: float

    @property
    def rtf(self) -> float:
        return real_time_factor(self.seconds, self.audio_s)


@contextmanager
def _num_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(cfg: DictConfig, dm, subset: str) -> Iterator[dict]:
    yield from dm.dataloader(subset, shuffle=False, max_duration=float(cfg.data.max_duration))


def _timing(cfg: DictConfig) -> dict:
    return {"threads": int(cfg.rtf.threads), "warmup_utts": int(cfg.rtf.warmup_utts)}


def _iter_utterances(batches: Iterator[dict]) -> Iterator[Utterance]:
    for batch in batches:
        for i, cut_id in enumerate(batch["cut_ids"]):
            feats = batch["feats"][i, : int(batch["feat_lens"][i])]
            yield Utterance(cut_id, batch["texts"][i], feats)


def _progress(desc: str, total: int | None):
    return tqdm(desc=desc, total=total, unit="utt", dynamic_ncols=True, leave=False)


@torch.inference_mode()
def decode_full_batched(loaded: LoadedModel, batches, device: str, desc: str) -> Decoded:
    """Full-context greedy CTC over batches; the timer covers forward + search on ``device``."""
    model = loaded.model.to(device)
    hyps, refs, timer, audio_s = {}, {}, Timer(), 0.0
    with _progress(desc, None) as bar:
        for n, batch in enumerate(batches):
            feats, feat_lens = batch["feats"].to(device), batch["feat_lens"].to(device)
            if n == 0:  # warm-up, untimed: allocator growth and kernel choice are one-off costs
                model(feats, feat_lens)
            with timer:
                log_probs, out_lens = model(feats, feat_lens)
                ids = greedy_ctc(log_probs, out_lens, blank_id=loaded.tokenizer.blank_id)
                if device != "cpu":
                    torch.cuda.synchronize()
            for cut_id, text, seq in zip(batch["cut_ids"], batch["texts"], ids, strict=True):
                hyps[cut_id], refs[cut_id] = loaded.tokenizer.decode(seq), text
            audio_s += float(batch["feat_lens"].sum()) * FRAME_SHIFT_MS / 1000.0
            bar.update(len(batch["cut_ids"]))
    loaded.model.to("cpu")
    return Decoded(hyps, refs, timer.seconds, audio_s)


def _decode_offline_one(loaded: LoadedModel, utt: Utterance) -> str:
    feats = utt.feats.unsqueeze(0)
    feat_lens = torch.tensor([feats.shape[1]])
    log_probs, out_lens = loaded.model(feats, feat_lens)
    ids = greedy_ctc(log_probs, out_lens, blank_id=loaded.tokenizer.blank_id)[0]
    return loaded.tokenizer.decode(ids)


def utterance_decoder(
    loaded: LoadedModel,
    chunk_size: int | None,
    left_chunks: int,
    runtime: str = "torch",
    onnx_dir: Path | None = None,
    threads: int = 1,
) -> Callable[[Utterance], str]:
    """``decode(utt) -> text`` at batch size 1: offline if ``chunk_size`` is None, else
    streaming; ``runtime="onnx"`` runs the graphs that ``asr_kd.export`` wrote to ``onnx_dir``."""
    step = None if chunk_size is None else chunk_size * loaded.model.subsampling_factor
    if runtime == "torch":
        if chunk_size is None:
            return lambda utt: _decode_offline_one(loaded, utt)
        return lambda utt: feed_chunks(
            StreamingGreedyDecoder(loaded.model, loaded.tokenizer, chunk_size, left_chunks),
            utt.feats,
            step,
        )
    if runtime != "onnx":
        raise ConfigError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
    if chunk_size is None:
        full = OnnxCTC(Path(onnx_dir) / FULL_FILE, threads)
        return lambda utt: full.transcribe(utt.feats.numpy())
    graph = OnnxStreamingCTC(Path(onnx_dir) / step_file_name(chunk_size, left_chunks), threads)
    decoder = OnnxStreamingDecoder(graph, loaded.tokenizer)  # one session, reset per utterance

    def decode(utt: Utterance) -> str:
        decoder.reset()
        return feed_chunks(decoder, utt.feats.numpy(), step)

    return decode


@torch.inference_mode()
def decode_one_at_a_time(
    decode: Callable[[Utterance], str],
    utterances: Iterator[Utterance],
    *,
    threads: int,
    warmup_utts: int,
    max_utts: int | None,
    desc: str,
    total: int | None,
) -> Decoded:
    """Batch size 1 on CPU with ``threads`` torch threads, one ``decode(utt)`` per utterance.

    The first ``warmup_utts`` utterances are decoded once untimed before their timed run, so
    one-off costs (allocator growth, kernel selection) stay out of the RTF.
    """
    hyps, refs, timer, audio_s = {}, {}, Timer(), 0.0
    with _num_threads(threads), _progress(desc, total) as bar:
        for n, utt in enumerate(utterances):
            if max_utts is not None and n >= max_utts:
                break
            if n < warmup_utts:
                decode(utt)
            with timer:
                hyps[utt.cut_id] = decode(utt)
            refs[utt.cut_id] = utt.text
            audio_s += utt.audio_s
            bar.update(1)
    return Decoded(hyps, refs, timer.seconds, audio_s)


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


def _runtime(cfg: DictConfig, name: str) -> dict:
    onnx_dir = Path(cfg.out_dir) / "onnx" / name
    return {"runtime": str(cfg.runtime), "onnx_dir": onnx_dir, "threads": int(cfg.rtf.threads)}


def _export_onnx(cfg: DictConfig, models: dict[str, LoadedModel]) -> dict:
    """runtime=onnx: export every model into ``<out_dir>/onnx/<name>/`` and check it against
    torch before any decoding; returns ``{name: {graph: max_abs_diff}}`` for the meta."""
    diffs = {}
    for name, loaded in models.items():
        chunk_sizes = []
        if getattr(loaded.model, "streaming", False):
            chunk_sizes = [_chunk_frames(loaded, name, ms) for ms in cfg.chunk_sizes_ms]
        left_chunks = loaded.model.resolve_left_chunks(cfg.left_chunks)
        paths = export_checkpoint(
            loaded, Path(cfg.out_dir) / "onnx" / name, chunk_sizes, left_chunks
        )
        diffs[name] = check_export(loaded, paths)
        bad = {g: d for g, d in diffs[name].items() if not d <= TOLERANCE}  # NaN is bad too
        if bad:
            raise RuntimeError(
                f"ONNX export of {name} ({loaded.path}) differs from torch by {bad} > {TOLERANCE}"
            )
    return diffs


def _full_row(cfg: DictConfig, dm, name: str, loaded: LoadedModel, subset: str) -> dict:
    """Full context: WER from batched decoding; RTF from batch size 1 on ``rtf.threads``."""
    batched = decode_full_batched(loaded, _batches(cfg, dm, subset), cfg.device, f"{name} full")
    max_utts = cfg.rtf.max_utts if cfg.runtime == "torch" else None  # onnx: all, for the WER
    timed = decode_one_at_a_time(
        utterance_decoder(loaded, None, -1, **_runtime(cfg, name)),
        _iter_utterances(_batches(cfg, dm, subset)),
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
        utterance_decoder(loaded, chunk_size, left_chunks, **_runtime(cfg, name)),
        _iter_utterances(_batches(cfg, dm, subset)),
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


def prepare_skips(data_dir: str | Path, subsets) -> dict | None:
    """What ``asr-kd-prepare`` dropped from each of ``subsets``, from its report in ``data_dir``:
    ``{"report": path, "subsets": {subset: {"skipped": n, "reasons": {reason: count}}}}``.

    None (and nothing reported) when the data dir has no report; a subset the report does not
    list is left out. An unreadable report is a warning, not a failed evaluation."""
    path = Path(data_dir) / PREPARE_REPORT
    if not path.is_file():
        return None
    try:
        prepared = json.loads(path.read_text())["subsets"]
        dropped = {
            subset: {
                "skipped": int(prepared[subset]["skipped"]),
                "reasons": {
                    reason: int(entry["count"])
                    for reason, entry in prepared[subset]["reasons"].items()
                    if reason not in KEPT_REASONS
                },
            }
            for subset in subsets
            if subset in prepared
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        warnings.warn(
            f"{path} is not an asr-kd-prepare report ({type(err).__name__}: {err}); the results "
            "will not say how many cuts preparation dropped",
            stacklevel=2,
        )
        return None
    return {"report": str(path), "subsets": dropped}


def _checkpoints(cfg: DictConfig) -> dict[str, str]:
    """Named checkpoints given on the command line; ``null`` entries are unused name slots."""
    given = {str(k): str(v) for k, v in (cfg.checkpoints or {}).items() if v is not None}
    if not given:
        raise ConfigError(
            "no checkpoints to evaluate: pass checkpoints.teacher=PATH, checkpoints.student_kd=PATH,"
            " checkpoints.student_ctc=PATH or +checkpoints.<name>=PATH"
        )
    missing = {k: v for k, v in given.items() if not Path(v).is_file()}
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
        cuts_file(cfg.data.dir, subset)
    out_dir = Path(cfg.out_dir)
    save_config(cfg, out_dir)
    models = {name: load_model(path) for name, path in checkpoints.items()}
    for name, loaded in models.items():  # fail before hours of decoding, not after
        if getattr(loaded.model, "streaming", False):
            for chunk_ms in cfg.chunk_sizes_ms:
                _chunk_frames(loaded, name, chunk_ms)
    if cfg.runtime not in ("torch", "onnx"):
        raise ConfigError(f"runtime must be 'torch' or 'onnx', got {cfg.runtime!r}")
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
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if cfg.plots:
        write_report(results, out_dir)
    else:
        (out_dir / "results.md").write_text(render_markdown(results))
    return results


def summary(results: dict, out_dir: str) -> str:
    lines = [f"{'model':<14} {'subset':<10} {'mode':<14} {'WER':>7} {'CER':>7} {'RTF':>8}"]
    for r in results["rows"]:
        lines.append(
            f"{r['model']:<14} {r['subset']:<10} {r['mode']:<14} "
            f"{r['wer']:>7.2f} {r['cer']:>7.2f} {r['rtf']:>8.4f}"
        )
    lines.append(f"report: {out_dir}/results.md, results.json, plots")
    return "\n".join(lines)
