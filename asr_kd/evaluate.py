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
students are timed in the same runtime. ``rtf_batch`` stays torch. ``quantize=[none,int8]``
(runtime=onnx) adds an int8 row beside each row (``"quantize": "int8"``): the graphs quantised
by :mod:`asr_kd.export.quantize` into ``<out_dir>/onnx/<name>/int8/``, checked against torch
with ``INT8_TOLERANCE``; ``graph_mb`` is the size of the graph file that ran. Both runtimes
decode through
``asr_kd.inference.factory.make_decoder``, as ``asr-kd-transcribe`` does, and are timed by
``asr_kd.inference.timing``.

``sherpa-onnx`` in ``runtime`` (``runtime=sherpa-onnx`` or a list, ``runtime=[onnx,sherpa-onnx]``)
adds, per model, a row ``full-sherpa-onnx`` (with ``full_context``; the model exported by
``asr_kd.export.sherpa`` into ``<out_dir>/sherpa/<name>/offline/`` and decoded by
``sherpa_onnx.OfflineRecognizer``) and, per streaming model and chunk size, a row
``stream-<N>ms-sherpa-onnx`` (exported into ``<out_dir>/sherpa/<name>/c<C>-l<LC>/``, decoded by
``sherpa_onnx.OnlineRecognizer``), each checked against torch and decoded
(:mod:`asr_kd.inference.sherpa`) from the cut's audio, on ``rtf.threads`` threads. Their RTF
covers what sherpa-onnx does (fbank from audio, model, greedy search; ``rtf_without_fbank``
leaves the fbank out), the other rows' does not cover the fbank. The other rows come from the
other runtime in the list (``onnx`` when sherpa-onnx is the only one).

RTF = processing seconds / audio seconds, where processing covers the model and the greedy
search on precomputed fbank features (data loading and feature extraction are not timed) and
audio seconds are fbank frames x 10 ms. The same timed spans give the cost per audio hour:
``cpu_s_per_audio_h`` (this process's CPU seconds, all threads, at ``rtf.threads``) and
``joules_per_audio_h`` (RAPL CPU-package energy, whole machine) where the machine exposes
readable RAPL counters, else null with ``energy_note`` "n/a (no RAPL)"; never an estimate.

Writes into ``out_dir``: ``results.json`` (``{"rows": [...], "meta": {...}}``, one row per
(model, subset, mode)), ``results.md``, ``wer_vs_latency.png``, ``wer_vs_macs.png``,
``wer_vs_cpu.png``, ``hyps/<model>.<subset>.<mode>[-int8].tsv`` (cut id, reference, hypothesis)
and ``config.yaml``.
A transformers CTC model (``checkpoints.<name>=hf:<dir|hub id>[@revision]``, e.g. the public
teacher a student was distilled from) gets a ``full`` row too, always run in torch (it is not
exported to ONNX, nor quantised, nor run through sherpa-onnx: its one row says ``runtime:
torch``, ``quantize: none`` whatever ``runtime`` and ``quantize`` are): WER/CER from batched
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

import numpy as np
import onnxruntime
import torch
from omegaconf import DictConfig

import asr_kd
from asr_kd.config import as_list, save_config
from asr_kd.data.datamodule import AsrDataModule, load_cuts
from asr_kd.data.features import SAMPLE_RATE, resample
from asr_kd.data.prepare import prepare_skips
from asr_kd.data.teacher_vocab import is_hf_source
from asr_kd.errors import ConfigError, MissingFileError
from asr_kd.export.onnx import TOLERANCE, check_export, export_checkpoint, quantize_export
from asr_kd.export.quantize import INT8_DIR, INT8_TOLERANCE, check_quantize
from asr_kd.inference.factory import RUNTIMES, Decoder, graph_path, make_decoder
from asr_kd.inference.timing import (
    Decoded,
    audio_utterances,
    decode_full_batched,
    decode_one_at_a_time,
    utterances,
)
from asr_kd.metrics import RaplCounters, Timer, error_rates
from asr_kd.models.hf import HFLoaded, hf_macs_per_audio_second
from asr_kd.models.loading import LoadedModel, load_model
from asr_kd.models.profile import (
    algorithmic_latency_ms,
    count_params,
    macs_per_audio_second,
    model_size_mb,
)
from asr_kd.models.streaming import chunk_frames
from asr_kd.report import render_markdown, row_label, write_report

__all__ = ["evaluate", "summary"]

RTF_SCOPE = "model + greedy CTC search on precomputed fbank; feature extraction not timed"
SHERPA = "sherpa-onnx"
SHERPA_RTF_SCOPE = "sherpa-onnx: fbank from audio + model + greedy CTC search (C++)"
COST_SCOPE = (
    "process CPU time (time.process_time, all threads) and RAPL CPU-package energy (whole "
    "machine) over the same timed spans as the RTF, per hour of audio"
)


def _batches(cfg: DictConfig, dm, subset: str) -> Iterator[dict]:
    yield from dm.dataloader(subset, shuffle=False, max_duration=float(cfg.data.max_duration))


def _timing(cfg: DictConfig) -> dict:
    return {"threads": int(cfg.rtf.threads), "warmup_utts": int(cfg.rtf.warmup_utts)}


def _onnx_dir(cfg: DictConfig, name: str, quantize: str = "none") -> Path:
    """``<out_dir>/onnx/<name>/``, its ``int8/`` for ``quantize="int8"``."""
    fp32 = Path(cfg.out_dir) / "onnx" / name
    return fp32 / INT8_DIR if quantize == "int8" else fp32


def _decoder(
    cfg: DictConfig,
    name: str,
    loaded: LoadedModel,
    chunk_size: int | None = None,
    left_chunks: int | None = None,
    quantize: str = "none",
) -> Decoder:
    """The batch-1 decoder of model ``name`` in ``cfg.runtime`` (offline if ``chunk_size`` is
    None): the checkpoint (torch), or the graphs ``_export_onnx`` wrote to
    ``<out_dir>/onnx/<name>/`` (onnx; ``int8/`` in it for ``quantize="int8"``)."""
    return make_decoder(
        str(cfg.runtime),
        loaded=loaded,
        onnx=_onnx_dir(cfg, name, quantize),
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


def _graph_mb(cfg: DictConfig, name: str, quantize: str, chunk_size, left_chunks) -> float | None:
    """MB of the ONNX graph file that decodes a row; None for runtime=torch."""
    if cfg.runtime != "onnx":
        return None
    path = graph_path(_onnx_dir(cfg, name, quantize), chunk_size, left_chunks)
    return round(path.stat().st_size / 2**20, 3)


def _row(name: str, subset: str, mode: str, scored: Decoded, timed: Decoded, **extra) -> dict:
    refs = [scored.refs[k] for k in sorted(scored.refs)]
    hyps = [scored.hyps[k] for k in sorted(scored.refs)]
    rates = error_rates(refs, hyps)
    row = {"model": name, "subset": subset, "mode": mode}
    row.update({k: rates[k] for k in ("wer", "cer", "sub", "del", "ins")})
    row.update(rtf=timed.rtf, **extra)
    row.update(cpu_s_per_audio_h=timed.cpu_s_per_audio_h)
    row.update(joules_per_audio_h=timed.joules_per_audio_h, energy_note=timed.energy_note)
    row.update(num_utts=len(refs), audio_s=round(scored.audio_s, 3), ref_words=rates["ref_words"])
    return row


def _write_hyps(out_dir: Path, row: dict, decoded: Decoded) -> None:
    tag = "-int8" if row.get("quantize") == "int8" else ""
    path = out_dir / "hyps" / f"{row['model']}.{row['subset']}.{row['mode']}{tag}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k}\t{decoded.refs[k]}\t{decoded.hyps[k]}" for k in sorted(decoded.refs)]
    path.write_text("cut_id\treference\thypothesis\n" + "\n".join(lines) + "\n")


def _check_diffs(name: str, loaded: LoadedModel, diffs: dict, tolerance: float) -> None:
    bad = {g: d for g, d in diffs.items() if not d <= tolerance}  # NaN is bad too
    if bad:
        raise RuntimeError(
            f"ONNX export of {name} ({loaded.path}) differs from torch by {bad} > {tolerance}"
        )


def _export_onnx(cfg: DictConfig, models: dict[str, LoadedModel]) -> dict:
    """runtime=onnx: export every model into ``<out_dir>/onnx/<name>/`` (and its int8 copy into
    ``int8/`` when ``quantize`` lists it) and check it against torch before any decoding;
    returns ``{name: {graph: max_abs_diff}}`` (int8 graphs: ``"<graph> int8"``) for the meta."""
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
        _check_diffs(name, loaded, diffs[name], TOLERANCE)
        if "int8" in cfg.quantize:
            _, int8 = quantize_export(loaded, paths, _onnx_dir(cfg, name))
            _check_diffs(name, loaded, int8, INT8_TOLERANCE)
            diffs[name].update({f"{g} int8": d for g, d in int8.items()})
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
    row = _row(name, subset, "full", batched, timed, runtime="torch", quantize="none")
    row.update(rtf_batch=batched.rtf, batch_size=1, chunk_ms=None, left_chunks=None)
    row.update(threads=int(cfg.rtf.threads), threads_batch=torch.get_num_threads())
    model = loaded.model.hf
    row.update(latency_ms=None, params=count_params(model), model_mb=model_size_mb(model))
    row.update(macs_per_audio_s=hf_macs_per_audio_second(loaded.model), graph_mb=None)
    row.update(source=str(loaded.source), frame_shift_ms=loaded.model.frame_shift_ms)
    _write_hyps(Path(cfg.out_dir), row, batched)
    return row


def _full_row(
    cfg: DictConfig, dm, name: str, loaded: LoadedModel, subset: str, quantize: str = "none"
) -> dict:
    """Full context: WER from batched decoding; RTF from batch size 1 on ``rtf.threads``.
    int8 (onnx only): WER and RTF of the int8 graph; no batched (torch fp32) pass."""
    int8, tag = quantize == "int8", " int8" if quantize == "int8" else ""
    batched = None
    if not int8:
        batched = decode_full_batched(loaded, _batches(cfg, dm, subset), cfg.device, f"{name} full")
    max_utts = cfg.rtf.max_utts if cfg.runtime == "torch" else None  # onnx: all, for the WER
    timed = decode_one_at_a_time(
        _decoder(cfg, name, loaded, quantize=quantize),
        utterances(_batches(cfg, dm, subset)),
        max_utts=max_utts,
        desc=f"{name} full{tag}, batch 1",
        total=len(batched.refs) if batched is not None and max_utts is None else None,
        **_timing(cfg),
    )
    scored = batched if cfg.runtime == "torch" else timed  # WER of the runtime that is timed
    row = _row(name, subset, "full", scored, timed, runtime=str(cfg.runtime), quantize=quantize)
    row.update(rtf_batch=None if int8 else batched.rtf, batch_size=1, chunk_ms=None)
    row.update(left_chunks=None, threads=int(cfg.rtf.threads))
    row.update(threads_batch=None if int8 else torch.get_num_threads())
    row.update(_model_figures(loaded, None), graph_mb=_graph_mb(cfg, name, quantize, None, None))
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
    quantize: str = "none",
) -> dict:
    """The streaming path at one chunk size: WER and RTF from the same batch-1 pass."""
    chunk_size, mode = _chunk_frames(loaded, name, chunk_ms), f"stream-{chunk_ms:g}ms"
    left_chunks = loaded.model.resolve_left_chunks(cfg.left_chunks)
    streamed = decode_one_at_a_time(
        _decoder(cfg, name, loaded, chunk_size, left_chunks, quantize),
        utterances(_batches(cfg, dm, subset)),
        max_utts=None,
        desc=f"{name} {mode}" + (" int8" if quantize == "int8" else ""),
        total=num_utts,
        **_timing(cfg),
    )
    row = _row(name, subset, mode, streamed, streamed, runtime=str(cfg.runtime), quantize=quantize)
    row.update(rtf_batch=None, batch_size=1, chunk_ms=chunk_ms, left_chunks=left_chunks)
    row.update(threads=int(cfg.rtf.threads), threads_batch=None)
    row.update(_model_figures(loaded, chunk_size, left_chunks))
    row.update(graph_mb=_graph_mb(cfg, name, quantize, chunk_size, left_chunks))
    _write_hyps(Path(cfg.out_dir), row, streamed)
    return row


def _sherpa_dir(cfg: DictConfig, name: str, chunk_size: int | None, left_chunks: int | None):
    """``<out_dir>/sherpa/<name>/c<C>-l<LC>/`` (OnlineRecognizer), ``.../offline/`` for
    ``chunk_size=None`` (OfflineRecognizer)."""
    leaf = "offline" if chunk_size is None else f"c{chunk_size}-l{left_chunks}"
    return Path(cfg.out_dir) / "sherpa" / name / leaf


def _streaming_models(models: dict[str, LoadedModel]) -> dict[str, LoadedModel]:
    return {k: v for k, v in models.items() if getattr(v.model, "streaming", False)}


def _sherpa_settings(cfg: DictConfig, name: str, loaded: LoadedModel) -> list[tuple]:
    """``(chunk_ms, chunk_size, left_chunks)`` of each sherpa-onnx row of one model: ``(None,
    None, None)`` (offline, full context) when ``full_context``, then one per chunk size for a
    streaming model. A transformers model has none (it runs in torch)."""
    if isinstance(loaded, HFLoaded):
        return []
    settings = [(None, None, None)] if cfg.full_context else []
    if getattr(loaded.model, "streaming", False):
        left_chunks = loaded.model.resolve_left_chunks(cfg.left_chunks)
        for chunk_ms in cfg.chunk_sizes_ms:
            settings.append((chunk_ms, _chunk_frames(loaded, name, chunk_ms), left_chunks))
    return settings


def _export_sherpa(cfg: DictConfig, models: dict[str, LoadedModel]) -> dict:
    """runtime has sherpa-onnx: export every model's sherpa-onnx rows (``_sherpa_settings``)
    and check each against torch; ``{name: {"offline" | "c<C>-l<LC>": max_abs_diff}}``."""
    from asr_kd.export.sherpa import check_sherpa, export_sherpa_model

    diffs = {}
    for name, loaded in models.items():
        for _, chunk_size, left_chunks in _sherpa_settings(cfg, name, loaded):
            out = _sherpa_dir(cfg, name, chunk_size, left_chunks)
            diff = check_sherpa(loaded, export_sherpa_model(loaded, out, chunk_size, left_chunks))
            diffs.setdefault(name, {})[out.name] = diff
            if not diff <= TOLERANCE:
                raise RuntimeError(
                    f"sherpa-onnx export of {name} ({loaded.path}) in {out} differs from torch "
                    f"by {diff} > {TOLERANCE}"
                )
    return diffs


def _audio(cut) -> np.ndarray:
    samples = cut.load_audio()[0]
    return resample(samples.astype("float32"), int(cut.sampling_rate), SAMPLE_RATE)


def _sherpa_rows(cfg: DictConfig, dm, name: str, loaded: LoadedModel, subset: str) -> list[dict]:
    """One row per ``_sherpa_settings`` entry, decoded by sherpa-onnx from each cut's audio:
    ``full-sherpa-onnx`` (OfflineRecognizer), ``stream-<N>ms-sherpa-onnx`` (OnlineRecognizer)."""
    return [
        _sherpa_row(cfg, dm, name, loaded, subset, *setting)
        for setting in _sherpa_settings(cfg, name, loaded)
    ]


def _sherpa_row(
    cfg: DictConfig,
    dm,
    name: str,
    loaded: LoadedModel,
    subset: str,
    chunk_ms: float | None,
    chunk_size: int | None,
    left_chunks: int | None,
) -> dict:
    """WER and RTF (fbank included) from one batch-1 pass of sherpa-onnx over the cuts' audio;
    audio seconds as the other rows count them (fbank frames). ``chunk_ms`` None: offline."""
    from asr_kd.inference.sherpa import SherpaOfflineDecoder, SherpaStreamingDecoder

    threads, out = int(cfg.rtf.threads), _sherpa_dir(cfg, name, chunk_size, left_chunks)
    offline = chunk_ms is None
    decode = (SherpaOfflineDecoder if offline else SherpaStreamingDecoder)(out, threads=threads)
    mode = f"full-{SHERPA}" if offline else f"stream-{chunk_ms:g}ms-{SHERPA}"
    cuts = {cut.id: cut for cut in load_cuts(cfg.data.dir, subset)}
    hyps, refs, timer, audio_s, fbank_s = {}, {}, Timer(energy=RaplCounters()), 0.0, 0.0
    for n, utt in enumerate(utterances(_batches(cfg, dm, subset))):
        samples = _audio(cuts[utt.cut_id])
        if n < int(cfg.rtf.warmup_utts):
            decode(samples)
        fbank_before = decode.fbank_seconds
        with timer:
            hyps[utt.cut_id] = decode(samples)
        fbank_s += decode.fbank_seconds - fbank_before
        refs[utt.cut_id], audio_s = utt.text, audio_s + utt.audio_s
    decoded = Decoded.timed_by(timer, hyps, refs, audio_s)  # CPU s, joules: sherpa-onnx's too
    row = _row(name, subset, mode, decoded, decoded, runtime=SHERPA, rtf_scope=SHERPA_RTF_SCOPE)
    row["rtf_without_fbank"] = (timer.seconds - fbank_s) / audio_s  # the other rows' scope
    row.update(rtf_batch=None, batch_size=1, chunk_ms=chunk_ms, left_chunks=left_chunks)
    row.update(threads=threads, threads_batch=None)
    row.update(_model_figures(loaded, chunk_size, -1 if left_chunks is None else left_chunks))
    row.update(graph_mb=round((out / "model.onnx").stat().st_size / 2**20, 3))
    _write_hyps(Path(cfg.out_dir), row, decoded)
    return row


def evaluate_model(cfg: DictConfig, dm, name: str, loaded: LoadedModel, subset: str) -> list[dict]:
    """All rows of one model on one subset: ``full`` and one ``stream-<N>ms`` per chunk size,
    each once per ``quantize`` entry (fp32 ``none``, then ``int8``), side by side.

    Full-context-only models (``model.streaming`` false, e.g. the teacher) get ``full`` only.
    """
    if isinstance(loaded, HFLoaded):
        return [_hf_row(cfg, dm, name, loaded, subset)] if cfg.full_context else []
    quantize = list(cfg.quantize)
    rows = []
    if cfg.full_context:
        rows += [_full_row(cfg, dm, name, loaded, subset, q) for q in quantize]
    if getattr(loaded.model, "streaming", False):
        num_utts = rows[0]["num_utts"] if rows else None  # progress-bar total
        for chunk_ms in cfg.chunk_sizes_ms:
            for q in quantize:
                rows.append(_stream_row(cfg, dm, name, loaded, subset, chunk_ms, num_utts, q))
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
        "cost_scope": COST_SCOPE,
        "quantize": list(cfg.quantize),
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
    for key in ("subsets", "chunk_sizes_ms", "quantize"):  # subsets=test: not four letters
        cfg[key] = as_list(cfg[key])
    dm = AsrDataModule(cfg.data.dir, num_workers=int(cfg.data.num_workers))
    for subset in cfg.subsets:  # a subset that was never prepared fails now, not after the others
        dm.layout.prepared_cuts(subset)
    out_dir = Path(cfg.out_dir)
    save_config(cfg, out_dir)
    models = {name: load_model(path) for name, path in checkpoints.items()}
    runtimes = _check_requests(cfg, models)
    cfg.runtime = runtimes[0]  # the full rows' and the plain stream rows' (config.yaml has all)
    onnx_diffs = _export_onnx(cfg, models) if cfg.runtime == "onnx" else None
    sherpa_diffs = _export_sherpa(cfg, models) if SHERPA in runtimes else None
    rows = []
    for subset in cfg.subsets:
        for name, loaded in models.items():
            rows += evaluate_model(cfg, dm, name, loaded, subset)
            if sherpa_diffs is not None:
                rows += _sherpa_rows(cfg, dm, name, loaded, subset)
    results = {"rows": rows, "meta": _meta(cfg, checkpoints)}
    results["meta"]["runtimes"] = runtimes
    if sherpa_diffs is not None:
        import sherpa_onnx

        results["meta"]["sherpa_onnx"] = sherpa_onnx.__version__
        results["meta"]["sherpa_max_abs_diff"] = sherpa_diffs
    dropped = prepare_skips(cfg.data.dir, cfg.subsets)
    if dropped is not None:
        results["meta"]["prepare"] = dropped
    if onnx_diffs is not None:
        results["meta"]["onnx_max_abs_diff"] = onnx_diffs
    _write_results(results, out_dir, plots=bool(cfg.plots))
    return results


def _check_requests(cfg: DictConfig, models: dict[str, LoadedModel]) -> list[str]:
    """Every chunk size fits every streaming model, and the runtimes exist: fail before hours
    of decoding, not after. Returns the runtimes, the one of the full rows first (torch or
    onnx; onnx when sherpa-onnx is the only one given), then sherpa-onnx if asked for."""
    for name, loaded in models.items():
        if getattr(loaded.model, "streaming", False):
            for chunk_ms in cfg.chunk_sizes_ms:
                _chunk_frames(loaded, name, chunk_ms)
    asked = [str(r) for r in as_list(cfg.runtime)]
    base = [r for r in asked if r != SHERPA]
    if any(r not in RUNTIMES for r in base) or len(base) > 1 or not asked:
        raise ConfigError(
            f"runtime must be 'torch', 'onnx' or 'sherpa-onnx', or a list of one of torch/onnx "
            f"and sherpa-onnx (runtime=[onnx,sherpa-onnx]), got {asked}"
        )
    runtimes = (base or ["onnx"]) + ([SHERPA] if SHERPA in asked else [])
    streaming = _streaming_models(models) if SHERPA in runtimes and cfg.chunk_sizes_ms else {}
    for name, loaded in streaming.items():
        left = loaded.model.resolve_left_chunks(cfg.left_chunks)
        if left < 1:
            raise ConfigError(
                f"runtime={asked}: sherpa-onnx's streaming WeNet CTC model needs a cache of >= 1 "
                f"chunk, model {name} ({loaded.path}) would run with left_chunks={left}: pass "
                "left_chunks=N (N >= 1)"
            )
    for q in cfg.quantize:
        check_quantize(str(q), "quantize entry")
    if "int8" in cfg.quantize and runtimes[0] != "onnx":
        raise ConfigError(
            f"quantize={list(cfg.quantize)} needs runtime=onnx (int8 graphs run in ONNX Runtime), "
            f"got runtime={asked}: pass runtime=onnx or quantize=[none]"
        )
    return runtimes


def _write_results(results: dict, out_dir: Path, plots: bool) -> None:
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if plots:
        write_report(results, out_dir)
    else:
        (out_dir / "results.md").write_text(render_markdown(results))


def summary(results: dict, out_dir: str) -> str:
    lines = [f"{'model':<18} {'subset':<10} {'mode':<14} {'WER':>7} {'CER':>7} {'RTF':>8}"]
    for r in results["rows"]:
        lines.append(
            f"{row_label(r):<18} {r['subset']:<10} {r['mode']:<14} "
            f"{r['wer']:>7.2f} {r['cer']:>7.2f} {r['rtf']:>8.4f}"
        )
    lines.append(f"report: {out_dir}/results.md, results.json, plots")
    return "\n".join(lines)
