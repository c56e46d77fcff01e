"""``asr-kd-evaluate``: WER/CER, RTF, latency and size of one or more checkpoints, one table.

The run is a loop over models x backends (:data:`~asr_kd.evaluation.backends.BACKENDS`, one per
runtime): each backend refuses what it cannot run, then exports what it decodes, then gives its
rows (:class:`~asr_kd.evaluation.rows.ResultRow`) of each model on each subset.

For each subset and each checkpoint it decodes

- ``full``: the whole utterance at once (full context).
- ``stream-<N>ms`` (streaming models only, one row per ``chunk_sizes_ms`` entry): chunks of N
  ms with ``left_chunks`` chunks of left context.

Every row's WER/CER comes from batched torch decoding on ``device`` (cpu, or cuda when there is
one): a streaming row's log-probs are the model's chunk-masked full forward at that chunk size
and left context, which equals ``forward_chunk`` (the contract the tests hold to 1e-4); one
batched pass per (model, subset, context) serves every ``decoding`` (greedy vectorised over the
batch, a beam search per utterance on the CPU); ``rtf_batch`` is its time. The ``rtf`` is
measured by the row's runtime at batch size 1 on ``rtf.threads`` CPU threads after warm-up
(``forward_chunk`` / the step graph for a streaming row) over the first ``rtf.max_utts``
utterances, so that a full-context teacher and a streaming student are compared at the same
thread count. That batch-1 pass is also the check: the transcripts of its first ``check_utts``
utterances are compared with the batched ones and ``meta["check"][<row key>]`` counts those
that differ (a warning says so when any do). A subset no larger than ``rtf.max_utts`` is
decoded whole by that batch-1 pass anyway: its rows take their WER from it and no batched pass
runs (``meta["check"]`` says so; ``check_utts=null`` asks for the comparison, and so for the
batched pass, all the same).

``decoding=[greedy,beam_lm]`` repeats both with each search of
:data:`~asr_kd.inference.search.DECODINGS` listed: rows ``full-beam_lm``,
``stream-<N>ms-beam_lm`` (their ``decoding`` key says which; settings in ``beam``, echoed in
``meta["beam"]``); greedy rows keep their names.

``runtime`` picks what runs the batch-1 passes: ``torch`` (eager) or ``onnx``: each checkpoint
is exported by ``asr_kd.export`` into ``<out_dir>/onnx/<name>/`` (full-context graph + one
chunk-step graph per chunk size), checked against torch, and run by ONNX Runtime with
``rtf.threads`` intra-op threads, so teacher and students are timed in the same runtime. A
rerun takes back an export made from the same checkpoint content, export settings and export
code instead of redoing it (:mod:`~asr_kd.evaluation.exports`; sherpa-onnx's exports too).
``quantize=[none,int8]`` (runtime=onnx) adds an int8 row beside each row (``"quantize":
"int8"``): the graphs quantised by :mod:`asr_kd.export.quantize` into
``<out_dir>/onnx/<name>/int8/``, checked against torch with ``INT8_TOLERANCE``, decoded at batch
1 over every utterance for WER and RTF (int8 graphs run in ONNX Runtime only); ``graph_mb`` is
the size of the graph file that ran. Both runtimes decode through
``asr_kd.inference.factory.make_decoder``, as ``asr-kd-transcribe`` does, and are timed by
``asr_kd.inference.timing``.

Rows are independent and resumable (:mod:`~asr_kd.evaluation.resume`): each finished row is
written to ``<out_dir>/rows/<key>.json`` (beside ``hyps/<key>.tsv``) with a fingerprint of the
checkpoint, the subset's cuts, the runtime and the row's settings; a rerun of the same command
(or of a killed one) skips the finished rows and says so, and a changed setting decodes the
rows it affects only.

``sherpa-onnx`` in ``runtime`` (``runtime=sherpa-onnx`` or a list, ``runtime=[onnx,sherpa-onnx]``)
adds rows ``full-sherpa-onnx`` and ``stream-<N>ms-sherpa-onnx`` decoded by sherpa-onnx itself
from the audio of every utterance at batch 1 (WER and RTF) (:mod:`~asr_kd.evaluation.backends.sherpa`); the other rows come from the other
runtime in the list (``onnx`` when sherpa-onnx is the only one).

RTF = processing seconds / audio seconds, where processing covers the model and the greedy
search on precomputed fbank features (data loading and feature extraction are not timed) and
audio seconds are fbank frames x 10 ms. The same timed spans give the cost per audio hour:
``cpu_s_per_audio_h`` (this process's CPU seconds, all threads, at ``rtf.threads``) and
``joules_per_audio_h`` (RAPL CPU-package energy, whole machine) where the machine exposes
readable RAPL counters, else null with ``energy_note`` "n/a (no RAPL)"; never an estimate.

Writes into ``out_dir``: ``results.json`` (``{"rows": [...], "meta": {...}}``, one row per
(model, subset, mode)), ``results.md``, ``wer_vs_latency.png``, ``wer_vs_macs.png``,
``wer_vs_cpu.png``, ``hyps/<model>.<subset>.<mode>[-int8].tsv`` (cut id, reference, hypothesis),
``rows/<model>.<subset>.<mode>[-int8].json`` (the finished rows) and ``config.yaml``.
A transformers CTC model (``ckpt.<name>=hf:<dir|hub id>[@revision]``) gets one
``full`` row, always run in torch (:mod:`~asr_kd.evaluation.backends.hf`).

When a checkpoint is named ``teacher``, every other model's rows say what it took from that
teacher (:mod:`~asr_kd.evaluation.agreement`): frame agreement of the argmaxes (the teacher's
non-blank and blank frames), KL(teacher || student) per frame, and its word errors split into
those the teacher shares and its own (and the teacher's it fixed); results.md shows them in a
second table, ``wer_vs_agreement.png`` plots WER against the non-blank agreement.

When ``<data.dir>/prepare_report.json`` exists, ``meta["prepare"]`` gives per evaluated subset
how many cuts ``asr-kd-prepare`` dropped and why (and the subset's heading in ``results.md``
says so when any were), so a WER over fewer utterances than the corpus holds is visible.

Usage:
    asr-kd-evaluate ckpt.teacher=exp/teacher/checkpoints/last.ckpt \\
        ckpt.student_kd=exp/student_kd/checkpoints/last.ckpt \\
        ckpt.student_ctc=exp/student_ctc/checkpoints/last.ckpt \\
        data.dir=exp/data subsets=[test] chunk_sizes_ms=[160,320,640] out_dir=exp/demo
    asr-kd-evaluate ... data.dir=librispeech/data \
        subsets=[dev-clean,dev-other,test-clean,test-other] device=cuda out_dir=exp/ls
    asr-kd-evaluate +ckpt.my_model=path/to.ckpt data.dir=DATA subsets=[dev,test]

    # from Python (tests): results = evaluate(compose("evaluate", [...overrides]))
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import onnxruntime
import torch
from omegaconf import DictConfig

import asr_kd
from asr_kd.config import save_config
from asr_kd.data.prepare import prepare_skips
from asr_kd.errors import MissingFileError
from asr_kd.evaluation.agreement import add_agreement
from asr_kd.evaluation.backends import BACKENDS, Backend, Corpus
from asr_kd.evaluation.report import write_results
from asr_kd.evaluation.settings import EvalSettings, only_greedy
from asr_kd.models.loading import load_model

__all__ = ["evaluate"]

RTF_SCOPE = "model + greedy CTC search on precomputed fbank; feature extraction not timed"
# with decoding=[...beam...]: each row times its own search (its ``decoding``), LM included
SEARCH_RTF_SCOPE = (
    "model + the row's CTC search (greedy, or its decoding's beam search with the LM) on "
    "precomputed fbank; feature extraction not timed"
)
COST_SCOPE = (
    "process CPU time (time.process_time, all threads) and RAPL CPU-package energy (whole "
    "machine) over the same timed spans as the RTF, per hour of audio"
)
# Decodes the transformers models of any run: they run in torch whatever ``runtime`` says.
ALWAYS = ("transformers",)


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


def _meta(settings: EvalSettings) -> dict:
    # a greedy-only run's meta keeps its keys: its results.json reads as it always did
    searches = {} if only_greedy(settings) else _search_meta(settings)
    return {
        **searches,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(),
        "torch": torch.__version__,
        "asr_kd": asr_kd.__version__,
        "python": platform.python_version(),
        "device": settings.device,
        "batch_threads": torch.get_num_threads(),
        "batch_max_duration_s": settings.max_duration,
        "rtf_threads": settings.rtf.threads,
        "rtf_warmup_utts": settings.rtf.warmup_utts,
        "rtf_max_utts": settings.rtf.max_utts,
        "check_utts": settings.check_utts,
        "rtf_scope": RTF_SCOPE if only_greedy(settings) else SEARCH_RTF_SCOPE,
        "cost_scope": COST_SCOPE,
        "quantize": list(settings.quantize),
        "runtime": settings.runtime,
        "onnxruntime": onnxruntime.__version__ if settings.runtime == "onnx" else None,
        "data_dir": settings.data_dir,
        "subsets": list(settings.subsets),
        "chunk_sizes_ms": list(settings.chunk_sizes_ms),
        "checkpoints": settings.checkpoints,
        "runtimes": list(settings.runtimes),
    }


def _search_meta(settings: EvalSettings) -> dict:
    return {
        "decodings": list(settings.decodings),
        "beam": asdict(settings.beam),
        "flashlight_text": version("flashlight-text"),
    }


def _check_files(checkpoints: dict[str, str], backends: list[type[Backend]]) -> None:
    """Every checkpoint is a file, or a source a backend reads itself (``hf:...``)."""
    missing = {
        name: path
        for name, path in checkpoints.items()
        if not any(b.reads_source(path) for b in backends) and not Path(path).is_file()
    }
    if missing:
        raise MissingFileError(f"checkpoint files not found: {missing}")


def evaluate(cfg: DictConfig) -> dict:
    """Decode every (checkpoint, subset, mode), write the report, return ``{"rows", "meta"}``."""
    settings = EvalSettings.from_config(cfg)
    kinds = [BACKENDS[name] for name in (*settings.runtimes, *ALWAYS)]
    _check_files(settings.checkpoints, kinds)
    corpus = Corpus(settings.data_dir, settings.max_duration, settings.num_workers)
    backends = [kind(settings, corpus) for kind in kinds]
    corpus.check(settings.subsets)  # a subset never prepared fails now, not after the others
    save_config(cfg, settings.out_dir)
    models = {name: load_model(path) for name, path in settings.checkpoints.items()}
    pairs = [(b, name, m) for b in backends for name, m in models.items() if b.runs(m)]
    for backend, name, loaded in pairs:  # fail before hours of decoding, not after
        backend.check(name, loaded)
    for backend, name, loaded in pairs:
        backend.prepare(name, loaded)
    rows = []
    for subset in settings.subsets:
        for name, loaded in models.items():
            for backend in backends:
                if backend.runs(loaded):
                    rows += [row.to_dict() for row in backend.rows(name, loaded, subset)]
    rows = add_agreement(rows, models, corpus, settings)
    meta = _meta(settings)
    for backend in backends:
        meta.update(backend.meta())
    dropped = prepare_skips(settings.data_dir, settings.subsets)
    if dropped is not None:
        meta["prepare"] = dropped
    results = {"rows": rows, "meta": meta}
    write_results(results, settings.out_dir, plots=settings.plots)
    return results
