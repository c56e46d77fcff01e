"""Deployment figures at real model sizes: a teacher offline against a student streaming, through
ONNX Runtime and sherpa-onnx, fp32 and int8, one thread, batch 1.

Both models are built from their ``conf/model`` configs with random weights: untrained, since
the cost of a graph does not depend on its weights. They go through the export a user runs
(:func:`asr_kd.export.onnx.export_and_check`): ``full.onnx`` and one step graph per chunk size,
their int8 copies (:mod:`asr_kd.export.quantize`), and sherpa-onnx's offline (teacher) and
streaming (student, one directory per chunk size) ``model.onnx``; each graph is checked against
torch and its max log-prob difference reported beside its timing.

Each row is one graph on one runtime, timed on one synthetic utterance
(:func:`asr_kd.models.benchmark.synthetic_wave`):

- ``rtf``: CPU seconds of the process (``time.process_time``: on a shared machine, other
  processes' load does not count, as it does in wall time) over audio seconds, the median of
  ``repeats`` passes; the rows are timed in turn within each pass, so load drifts hit all alike;
- ``call_ms_mean`` / ``call_ms_p95``: wall milliseconds per call: per chunk when streaming (the
  latency a chunk adds), per utterance offline;
- ``mb``: the graph file; ``macs_per_audio_s``: the torch model's multiply-accumulates
  (:func:`asr_kd.models.profile.macs_per_audio_second`; the graphs' folds do a little more);
- ``input``: ``fbank`` (our runner on precomputed features, as ``asr-kd-evaluate`` times it) or
  ``audio`` (sherpa-onnx computes its own fbank: its rows include it).

Usage:
    settings = DeploySettings(teacher="teacher_large", student="student_small")
    result = run_deploy_benchmark(settings, out_dir)     # exports into out_dir, then times
    print(format_table(result.rows)); print(*format_ratios(result), sep="\\n")
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError
from asr_kd.export.onnx import INT8_SUFFIX, export_and_check
from asr_kd.inference.factory import open_graph
from asr_kd.inference.onnx import OnnxStreamingCTC, session_options, step_file_name
from asr_kd.inference.sherpa import SherpaOfflineDecoder, SherpaStreamingDecoder
from asr_kd.models.benchmark import model_from_config, synthetic_wave
from asr_kd.models.loading import LoadedModel
from asr_kd.models.profile import macs_per_audio_second
from asr_kd.models.streaming import chunk_frames

__all__ = [
    "DeployResult",
    "DeploySettings",
    "Row",
    "Utterance",
    "cpu_description",
    "format_ratios",
    "format_table",
    "profile_eager_step",
    "profile_step_graph",
    "profile_weight_products",
    "random_model",
    "run_deploy_benchmark",
]

_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class DeploySettings:
    """What to measure: ``teacher`` and ``student`` are ``conf/model`` names; the student streams
    at each of ``chunks_ms`` with its default left context; ``ratio_chunk_ms`` is the chunk the
    ratios are judged at; ``seconds`` of synthetic audio, timed ``repeats`` times."""

    teacher: str = "teacher_large"
    student: str = "student_small"
    chunks_ms: tuple[int, ...] = (160, 320, 640)
    ratio_chunk_ms: int = 320
    seconds: float = 30.0
    repeats: int = 3

    def __post_init__(self) -> None:
        if self.ratio_chunk_ms not in self.chunks_ms:
            raise ConfigError(
                f"ratio chunk {self.ratio_chunk_ms} ms is not among the chunks measured "
                f"{list(self.chunks_ms)}: add it to --chunks-ms or pick one of them"
            )
        if self.seconds < 1 or self.repeats < 1:
            raise ConfigError(f"seconds {self.seconds} and repeats {self.repeats} must be >= 1")


@dataclass(frozen=True)
class Utterance:
    """One synthetic utterance: 16 kHz ``samples`` (N,) in [-1, 1] and their raw fbank (T, 80)."""

    samples: np.ndarray
    feats: np.ndarray

    @property
    def seconds(self) -> float:
        return self.samples.size / _SAMPLE_RATE

    @classmethod
    def synthetic(cls, seconds: float) -> Utterance:
        import torchaudio.compliance.kaldi as kaldi

        wave = synthetic_wave(seconds)
        feats = kaldi.fbank(wave[None] * 32768, num_mel_bins=80, dither=0.0)
        return cls(wave.numpy().astype(np.float32), feats.numpy())


@dataclass
class Row:
    """One graph on one runtime (module docstring: what each figure is)."""

    model: str
    graph: str  # "full", "stream-320ms", "sherpa offline", "sherpa stream-320ms"
    runtime: str  # "onnxruntime" or "sherpa-onnx"
    precision: str  # "fp32" or "int8"
    input: str  # "fbank" or "audio"
    chunk_ms: int | None
    mb: float
    macs_per_audio_s: float
    max_abs_diff: float
    rtf: float = float("nan")
    call_ms_mean: float = float("nan")
    call_ms_p95: float = float("nan")
    cpu_s: list[float] = field(default_factory=list, repr=False)

    @property
    def gmacs(self) -> float:
        """Effective GMAC/s: the model's MACs per audio second over the RTF."""
        return self.macs_per_audio_s / self.rtf / 1e9

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "cpu_s"}
        return {**out, "gmacs": self.gmacs}


@dataclass
class DeployResult:
    settings: DeploySettings
    rows: list[Row]
    audio_s: float

    def find(self, model: str, graph: str, precision: str = "fp32") -> Row | None:
        for row in self.rows:
            if (row.model, row.graph, row.precision) == (model, graph, precision):
                return row
        return None


def random_model(name: str) -> LoadedModel:
    """``conf/model/<name>.yaml`` with random weights (seeded) and the CMVN of synthetic fbank,
    as a :class:`LoadedModel` with the char tokenizer (the configs' vocabulary)."""
    torch.manual_seed(0)
    model = model_from_config(name)
    feats = torch.from_numpy(Utterance.synthetic(5.0).feats)
    model.set_cmvn(feats.mean(0), feats.std(0))
    return LoadedModel(model, Tokenizer.char(), {}, name, Path(f"<random {name}>"))


# ---------------------------------------------------------------------------- runners
# A runner: graph path -> run(utterance) -> wall seconds of each call (chunk or utterance).
def _ort_full(path: Path) -> Callable[[Utterance], list[float]]:
    runner = open_graph(path, streaming=False, threads=1)

    def run(utt: Utterance) -> list[float]:
        start = time.perf_counter()
        runner.log_probs(utt.feats)
        return [time.perf_counter() - start]

    return run


def _ort_step(path: Path) -> Callable[[Utterance], list[float]]:
    runner = open_graph(path, streaming=True, threads=1)

    def run(utt: Utterance) -> list[float]:
        calls, start = [], time.perf_counter()
        for _ in runner.chunks(utt.feats):  # each chunk runs between two yields
            now = time.perf_counter()
            calls.append(now - start)
            start = now
        runner.flush()
        return [*calls, time.perf_counter() - start]

    return run


def _sherpa_offline(path: Path) -> Callable[[Utterance], list[float]]:
    decode = SherpaOfflineDecoder(path.parent, threads=1)

    def run(utt: Utterance) -> list[float]:
        start = time.perf_counter()
        decode(utt.samples)
        return [time.perf_counter() - start]

    return run


def _sherpa_online(path: Path) -> Callable[[Utterance], list[float]]:
    decode = SherpaStreamingDecoder(path.parent, threads=1)

    def run(utt: Utterance) -> list[float]:
        stamps = [time.perf_counter()]
        decode(utt.samples, on_partial=lambda *_: stamps.append(time.perf_counter()))
        stamps.append(time.perf_counter())  # the tail: silence, input_finished, last chunk
        return np.diff(stamps).tolist()

    return run


# (runtime, input, streaming) -> runner; one entry per way a graph is run.
_RUNNERS = {
    ("onnxruntime", "fbank", False): _ort_full,
    ("onnxruntime", "fbank", True): _ort_step,
    ("sherpa-onnx", "audio", False): _sherpa_offline,
    ("sherpa-onnx", "audio", True): _sherpa_online,
}


# ---------------------------------------------------------------------------- export
@dataclass
class _Graph:
    row: Row
    path: Path
    streaming: bool


def _export(model: tuple, out_dir: Path, runtime: str, chunk_by_key: dict, **kwargs):
    """``export_and_check`` of ``model`` = (config name, LoadedModel, MACs per audio second by
    chunk ms, None = full context) into ``out_dir`` with ``kwargs``, checked against torch, as
    graphs to time; ``chunk_by_key``: the chunk (ms, None = full context) of each graph key."""
    name, loaded, macs = model
    checked = export_and_check(loaded, out_dir, **kwargs)
    checked.check(str(loaded.path))
    graphs = []
    for key, path in checked.paths.items():
        chunk = chunk_by_key[key.removesuffix(INT8_SUFFIX)]
        label = "full" if chunk is None else f"stream-{chunk}ms"
        if runtime == "sherpa-onnx":
            label = "sherpa offline" if chunk is None else f"sherpa stream-{chunk}ms"
        row = Row(
            model=name,
            graph=label,
            runtime=runtime,
            precision="int8" if key.endswith(INT8_SUFFIX) else "fp32",
            input="audio" if runtime == "sherpa-onnx" else "fbank",
            chunk_ms=chunk,
            mb=path.stat().st_size / 2**20,
            macs_per_audio_s=macs[chunk],
            max_abs_diff=checked.diffs[key],
        )
        graphs.append(_Graph(row, path, chunk is not None))
    return graphs


def _export_all(settings: DeploySettings, out_dir: Path, seconds: float) -> list[_Graph]:
    """Every graph of the benchmark, exported into ``out_dir`` and checked, as rows to time:
    the teacher's full.onnx (+ int8) and sherpa-onnx offline model; the student's full.onnx and
    step graphs (+ int8) and one sherpa-onnx streaming model per chunk size."""
    teacher, student = random_model(settings.teacher), random_model(settings.student)
    frames = {
        ms: chunk_frames(student.model, ms, "--chunks-ms entry", settings.student)
        for ms in settings.chunks_ms
    }
    left = student.model.default_left_chunks
    t = (settings.teacher, teacher, {None: macs_per_audio_second(teacher.model, seconds=seconds)})
    s_macs = {None: macs_per_audio_second(student.model, seconds=seconds)}
    for ms, c in frames.items():
        s_macs[ms] = macs_per_audio_second(student.model, c, left, seconds)
    s = (settings.student, student, s_macs)
    full = {"full": None, "sherpa-onnx-offline": None}
    steps = {f"stream-c{c}": ms for ms, c in frames.items()}
    graphs = _export(t, out_dir / "teacher", "onnxruntime", full, quantize="int8")
    graphs += _export(
        t, out_dir / "teacher-sherpa", "sherpa-onnx", full, fmt="sherpa-onnx",
        chunk_sizes=[], recognizer="offline",
    )  # fmt: skip
    graphs += _export(
        s, out_dir / "student", "onnxruntime", {**full, **steps},
        chunk_sizes=list(frames.values()), quantize="int8",
    )  # fmt: skip
    for ms, c in frames.items():
        graphs += _export(
            s, out_dir / f"student-sherpa-{ms}ms", "sherpa-onnx", {"sherpa-onnx": ms},
            fmt="sherpa-onnx", chunk_sizes=[c],
        )  # fmt: skip
    return graphs


# ---------------------------------------------------------------------------- timing
def _time_rows(graphs: list[_Graph], utt: Utterance, repeats: int) -> None:
    """Each graph's runner warmed up once, then ``repeats`` passes over all of them in turn;
    fills each row's CPU seconds per pass, its median RTF and its per-call wall times."""
    runs = {}
    for g in graphs:
        runs[id(g)] = run = _RUNNERS[g.row.runtime, g.row.input, g.streaming](g.path)
        run(utt)  # warm-up: allocator, kernel choice, one-off initialisation
    calls: dict[int, list[float]] = {id(g): [] for g in graphs}
    for _ in range(repeats):
        for g in graphs:
            start = time.process_time()
            calls[id(g)] += runs[id(g)](utt)
            g.row.cpu_s.append(time.process_time() - start)
    for g in graphs:
        ms = 1e3 * np.asarray(calls[id(g)])
        g.row.rtf = statistics.median(g.row.cpu_s) / utt.seconds
        g.row.call_ms_mean, g.row.call_ms_p95 = float(ms.mean()), float(np.percentile(ms, 95))


def run_deploy_benchmark(settings: DeploySettings, out_dir: str | Path) -> DeployResult:
    """Export every graph into ``out_dir``, time them (module docstring), return the rows."""
    torch.set_num_threads(1)
    utt = Utterance.synthetic(settings.seconds)
    graphs = _export_all(settings, Path(out_dir), settings.seconds)
    _time_rows(graphs, utt, settings.repeats)
    return DeployResult(settings, [g.row for g in graphs], utt.seconds)


# ---------------------------------------------------------------------------- report
_HEADER = (
    "| model | graph | runtime | precision | input | RTF | ms/call mean | ms/call p95 | MB "
    "| GMAC/audio-s | eff. GMAC/s | max abs diff |"
)


def format_table(rows: list[Row]) -> str:
    """The rows as a markdown table (ms/call: per chunk streaming, per utterance offline)."""
    lines = [_HEADER, "|" + "---|" * _HEADER.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.graph} | {r.runtime} | {r.precision} | {r.input} | {r.rtf:.4f} "
            f"| {r.call_ms_mean:.2f} | {r.call_ms_p95:.2f} | {r.mb:.1f} "
            f"| {r.macs_per_audio_s / 1e9:.3f} | {r.gmacs:.1f} | {r.max_abs_diff:.1e} |"
        )
    return "\n".join(lines)


def _ratio(num: Row | None, den: Row | None) -> float:
    return float("nan") if num is None or den is None else num.rtf / den.rtf


def format_ratios(result: DeployResult) -> list[str]:
    """The ratios issue 22 judges: student streaming / teacher offline through each runtime
    (target <= 1/8), student streaming / its own full context (<= 1.5), int8 / fp32."""
    st, te, ms = result.settings.student, result.settings.teacher, result.settings.ratio_chunk_ms
    stream, sherpa = f"stream-{ms}ms", f"sherpa stream-{ms}ms"
    lines = []
    for what, num, den in (
        ("onnxruntime", result.find(st, stream), result.find(te, "full")),
        ("sherpa-onnx", result.find(st, sherpa), result.find(te, "sherpa offline")),
    ):
        r = _ratio(num, den)
        lines.append(f"{what}: {st} {stream} / {te} offline RTF = {r:.4f} = 1/{1 / r:.1f} "
                     "(target <= 1/8, fp32 both)")  # fmt: skip
    full = result.find(st, "full")
    for c in result.settings.chunks_ms:
        r = _ratio(result.find(st, f"stream-{c}ms"), full)
        lines.append(f"{st} stream-{c}ms / full context RTF (onnxruntime fp32) = {r:.2f} "
                     "(target <= 1.5)")  # fmt: skip
    for row in result.rows:
        if row.precision == "int8":
            fp32 = result.find(row.model, row.graph)
            lines.append(
                f"{row.model} {row.graph} int8 / fp32: RTF x{_ratio(row, fp32):.2f}, "
                f"MB {row.mb:.1f} / {fp32.mb:.1f}"
            )
    return lines


def cpu_description() -> str:
    """The CPU's model name and its SIMD level (AVX2, AVX-512, VNNI): int8 speed depends on it."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2'}), {os.cpu_count()} CPUs"


# ---------------------------------------------------------------------------- profiles
def _ratio_step_path(settings: DeploySettings, out_dir: str | Path) -> tuple[Path, int, int]:
    """The student's step graph at ``ratio_chunk_ms`` (exported by the benchmark) and its chunk
    size and left context."""
    model = model_from_config(settings.student)
    chunk = chunk_frames(model, settings.ratio_chunk_ms, "--ratio-chunk-ms", settings.student)
    left = model.default_left_chunks
    return Path(out_dir) / "student" / step_file_name(chunk, left), chunk, left


def profile_step_graph(settings: DeploySettings, out_dir: str | Path, top: int = 12) -> str:
    """ONNX Runtime's profiler on the student's step graph at ``ratio_chunk_ms`` (exported into
    ``out_dir`` by :func:`run_deploy_benchmark`) over the utterance: time per op type, the
    ``top`` slowest, as a text table."""
    path, _, _ = _ratio_step_path(settings, out_dir)
    opts = session_options(1)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(out_dir) / "ort-profile")
    runner = OnnxStreamingCTC(path, options=opts)
    utt = Utterance.synthetic(settings.seconds)
    for _ in range(2):  # the first pass warms up; only the second is counted
        runner.accept(utt.feats)
        runner.flush()
    trace = json.loads(Path(runner.session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in trace if e.get("name") == "model_run")
    counted = starts[len(starts) // 2 :]
    per_op: dict[str, list[float]] = {}
    runs = len(counted)
    for event in trace:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if event["ts"] >= counted[0]:
            per_op.setdefault(event["args"]["op_name"], []).append(event["dur"])
    total = sum(sum(d) for d in per_op.values())
    lines = [f"ORT profile of {path.name}: {runs} steps, {total / max(runs, 1):.0f} us of "
             "kernels per step; op type, nodes per step, us per step, share"]  # fmt: skip
    for op, durs in sorted(per_op.items(), key=lambda kv: -sum(kv[1]))[:top]:
        lines.append(
            f"  {op:28s} {len(durs) / max(runs, 1):6.1f} {sum(durs) / max(runs, 1):9.1f} "
            f"{sum(durs) / total:6.1%}"
        )
    return "\n".join(lines)


def profile_eager_step(settings: DeploySettings, top: int = 12) -> str:
    """torch.profiler on the eager ``forward_chunk`` of the student at ``ratio_chunk_ms`` over
    the utterance: the ``top`` ops by self CPU time, as torch's table."""
    from torch.profiler import ProfilerActivity, profile

    loaded = random_model(settings.student)
    _, chunk, left = _ratio_step_path(settings, ".")
    model = loaded.model
    feats = torch.from_numpy(Utterance.synthetic(settings.seconds).feats)[None]
    hop = chunk * model.subsampling_factor

    def stream() -> None:
        state = model.init_state(1, chunk, left)
        for start in range(0, feats.size(1), hop):
            _, state = model.forward_chunk(feats[:, start : start + hop], state)
        model.flush(state)

    stream()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        stream()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    return (
        f"torch.profiler of {settings.student} forward_chunk, chunk {chunk}, left {left}:\n{table}"
    )


# Rows at which profile_weight_products times the step's weight products: around the chunk sizes
# users pick (4 / 8 / 16 frames = 160 / 320 / 640 ms at 40 ms), and 6 and 12, the row blocks of
# ONNX Runtime's AVX2 (FMA3) float kernel, where an 8-row product is a 6-row and a 2-row pass.
_PRODUCT_ROWS = (4, 6, 8, 12, 16)
# Bytes of weights that stay in a typical L2 + L3 slice: the "cache-resident" comparison.
_RESIDENT_BYTES = 4 * 2**20


def _weight_products(path: Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The (weight (N, K), bias) of every ``Gemm`` of an exported graph whose B is a constant, in
    graph order: the products whose weights a streaming step reads for every chunk."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = {t.name: t for t in model.graph.initializer}
    products = []
    for node in model.graph.node:
        if node.op_type != "Gemm" or node.input[1] not in consts:
            continue
        attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
        w = numpy_helper.to_array(consts[node.input[1]])
        w = w if attrs.get("transB", 0) else w.T  # (N, K)
        bias = node.input[2] if len(node.input) > 2 else ""
        products.append((w, numpy_helper.to_array(consts[bias]) if bias in consts else None))
    return products


def _products_session(products: list, rows: int):
    """One ONNX Runtime session that runs ``products`` independently on ``(rows, K)`` inputs
    (one input per distinct K), as the step's ``Gemm``s (transB, bias); -> (session, feed)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outputs, widths = [], [], [], sorted({w.shape[1] for w, _ in products})
    for i, (w, b) in enumerate(products):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w, np.float32), f"w{i}"))
        ins = [f"x{w.shape[1]}", f"w{i}"]
        if b is not None:
            inits.append(numpy_helper.from_array(b.astype(np.float32), f"b{i}"))
            ins.append(f"b{i}")
        nodes.append(helper.make_node("Gemm", ins, [f"y{i}"], transB=1))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [rows, len(w)]))
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [rows, k]) for k in widths]
    graph = helper.make_graph(nodes, "weight_products", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(
        model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feed = {f"x{k}": rng.standard_normal((rows, k), dtype=np.float32) for k in widths}
    return session, feed


def _cpu_ms_per_run(session, feed, runs: int, passes: int = 5) -> float:
    """CPU milliseconds of one ``session.run``: the fastest of ``passes`` passes of ``runs``."""
    for _ in range(max(1, runs // 10)):
        session.run(None, feed)
    best = float("inf")
    for _ in range(passes):
        start = time.process_time()
        for _ in range(runs):
            session.run(None, feed)
        best = min(best, (time.process_time() - start) / runs)
    return 1e3 * best


def profile_weight_products(
    settings: DeploySettings, out_dir: str | Path, step_ms: float | None = None, runs: int = 50
) -> str:
    """The floor of the student's step at ``ratio_chunk_ms``: its weight products (every
    constant-weight ``Gemm`` of the step graph exported into ``out_dir``) alone, one thread, at
    several row counts (the chunk's frames among them), and the same products at the chunk's
    rows with only the first few MiB of weights (cache-resident), as a text table. A streaming
    step multiplies every weight of the model with a few rows per chunk: how fast the CPU's
    float kernel does that, and whether the weights stay in its caches, bound the step from
    below. ``step_ms``: the whole step's CPU ms per chunk (for the share), if known."""
    path, chunk, _ = _ratio_step_path(settings, out_dir)
    products = _weight_products(path)
    mib = sum(w.nbytes for w, _ in products) / 2**20
    lines = [
        f"weight products of {path.name} alone: {len(products)} Gemms, {mib:.1f} MiB of fp32 "
        "weights; rows, CPU ms per step, GMAC/s"
    ]
    for rows in sorted({*_PRODUCT_ROWS, chunk}):
        session, feed = _products_session(products, rows)
        ms = _cpu_ms_per_run(session, feed, runs)
        macs = rows * sum(w.size for w, _ in products)
        mark = "  <- this chunk" if rows == chunk else ""
        if rows == chunk and step_ms:
            mark += f": {ms / step_ms:.0%} of the whole step's {step_ms:.2f} ms"
        lines.append(f"  {rows:3d} {ms:8.3f} {macs / ms / 1e6:7.1f}{mark}")
    resident, size = [], 0
    for w, b in products:
        if resident and size + w.nbytes > _RESIDENT_BYTES:
            break
        resident.append((w, b))
        size += w.nbytes
    session, feed = _products_session(resident, chunk)
    ms = _cpu_ms_per_run(session, feed, runs * 4)
    macs = chunk * sum(w.size for w, _ in resident)
    lines.append(
        f"  the first {len(resident)} products only ({size / 2**20:.1f} MiB, stays in cache), "
        f"{chunk} rows: {macs / ms / 1e6:.1f} GMAC/s"
    )
    return "\n".join(lines)
