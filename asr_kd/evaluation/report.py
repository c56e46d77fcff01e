"""results.json -> results.md (a table a person reads) and plots (WER vs latency, MACs, CPU).

``asr-kd-evaluate`` calls :func:`write_results` at the end of a run; ``python -m
asr_kd.cli.report`` re-renders an existing ``results.json`` (after editing it, or with a newer
asr_kd). The rows' keys and the table's columns are those of
:class:`~asr_kd.evaluation.rows.ResultRow`.

Usage:
    results = load_results("exp/demo/results.json")
    print(render_markdown(results))
    write_report(results, "exp/demo")     # results.md, wer_vs_{latency,macs,cpu,agreement}.png
    print(summary(results, "exp/demo"))   # the few columns asr-kd-evaluate prints
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from asr_kd.errors import BadFileError, MissingFileError
from asr_kd.evaluation.rows import (
    COLUMNS,
    DISTILL_COLUMNS,
    HOTWORD_COLUMNS,
    NUMBER_KEYS,
    REQUIRED_KEYS,
    fmt,
    row_label,
)

__all__ = [
    "REQUIRED_KEYS",
    "load_results",
    "plot_wer_vs_agreement",
    "plot_wer_vs_cpu",
    "plot_wer_vs_latency",
    "plot_wer_vs_macs",
    "render_markdown",
    "row_label",
    "summary",
    "write_report",
    "write_results",
]


def load_results(path: str | Path) -> dict:
    """Read and check a results.json: ``{"rows": [...], "meta": {...}}`` with the reported keys."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"results file not found: {path}")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BadFileError(f"{path} is not valid JSON: {err}") from err
    rows = results.get("rows") if isinstance(results, dict) else None
    if not isinstance(rows, list):
        raise BadFileError(
            f'{path}: expected {{"rows": [...], "meta": {{...}}}}, got {results!r:.80}'
        )
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadFileError(f"{path}: row {i} is not an object: {row!r:.80}")
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise BadFileError(f"{path}: row {i} ({row.get('model')}) lacks keys {missing}")
        not_numbers = {
            k: row[k]
            for k in NUMBER_KEYS
            if row.get(k) is not None
            and (isinstance(row[k], bool) or not isinstance(row[k], (int, float)))
        }
        if not_numbers:
            raise BadFileError(
                f"{path}: row {i} ({row['model']}) has values that are not numbers or null: "
                f"{not_numbers}"
            )
    if results.setdefault("meta", {}) is None:
        results["meta"] = {}
    if not isinstance(results["meta"], dict):
        raise BadFileError(f'{path}: "meta" is not an object: {results["meta"]!r:.80}')
    return results


def _table(rows: Sequence[dict], columns=COLUMNS) -> list[str]:
    """A markdown table of ``rows``: a header line, a rule, one line per row."""
    lines = ["| " + " | ".join(column.header for column in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    return lines + ["| " + " | ".join(c.cell(r) for c in columns) + " |" for r in rows]


_DISTILL_LEGEND = """What distillation did, each row against `{teacher}` (full context): Agree = percent of the
teacher's non-blank (blank) frames on which the row's argmax is the teacher's; KL = mean
KL(teacher || row) per frame, nats; the row's word errors that the teacher makes at the same
place (shared) and its own (shared + own = WER), and the teacher's errors it does not make
(fixed), in percent of reference words. Frame figures: batched torch at the row's context."""


def _distill_table(rows: Sequence[dict]) -> list[str]:
    """The second table of a subset: the rows compared with a teacher, if any."""
    compared = [r for r in rows if r.get("teacher")]
    if not compared:
        return []
    legend = _DISTILL_LEGEND.format(teacher=compared[0]["teacher"])
    return [legend, "", *_table(compared, DISTILL_COLUMNS), ""]


_HOTWORD_LEGEND = """Hotwords (`{hotwords}`): recall = percent of their occurrences in the references that
the hypothesis of the same utterance holds; false = occurrences in hypotheses beyond the
reference's; WER without hotwords = the WER of the utterances whose reference holds none (what
biasing costs elsewhere). Rows `*-beam_hotwords`, `*-beam_lm_hotwords` are biased, the others
not."""


def _hotword_table(rows: Sequence[dict], meta: dict) -> list[str]:
    """The hotword table of a subset: every row of a run with ``beam.hotwords``."""
    scored = [r for r in rows if r.get("hotword_refs") is not None]
    if not scored:
        return []
    legend = _HOTWORD_LEGEND.format(hotwords=meta.get("beam", {}).get("hotwords"))
    return [legend, "", *_table(scored, HOTWORD_COLUMNS), ""]


def _subsets(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["subset"] for r in rows))


def _runtime(meta: dict) -> str | None:
    if meta.get("runtime") == "onnx":
        text = f"ONNX Runtime {meta.get('onnxruntime')} (graphs exported by asr_kd.export)"
    else:
        text = "torch eager" if meta.get("runtime") == "torch" else None
    if text and meta.get("sherpa_onnx"):  # rows *-sherpa-onnx (evaluation.backends.sherpa)
        text += (
            f"; rows `*-sherpa-onnx`: sherpa-onnx {meta['sherpa_onnx']} "
            "(`full-sherpa-onnx`: `OfflineRecognizer.from_wenet_ctc`, `stream-*-sherpa-onnx`: "
            "`OnlineRecognizer.from_wenet_ctc`; from the audio: their RTF includes the fbank)"
        )
    return text


def _header(meta: dict) -> list[str]:
    lines = ["# asr_kd evaluation", ""]
    facts = [
        ("Date", meta.get("date")),
        ("Machine", meta.get("machine")),
        ("torch", meta.get("torch")),
        ("asr_kd", meta.get("asr_kd")),
        (
            "Runtime of the batch-1 rows (RTF, check)"
            if "check" in meta
            else "Runtime of the batch-1 rows (RTF, WER)",
            _runtime(meta),
        ),
        ("Data", meta.get("data_dir")),
    ]
    lines += [f"- {name}: {value}" for name, value in facts if value]
    for name, path in (meta.get("checkpoints") or {}).items():
        lines.append(f"- `{name}`: {path}")
    return lines + [""]


_LEGEND = """\
How to read this table:

- WER/CER: percent, corpus level (jiwer); Sub/Del/Ins are word substitutions, deletions and
  insertions as percent of reference words (they sum to the WER).
- Mode `full`: the whole utterance at once (full context). Mode `stream-<N>ms`: the streaming
  path, N ms feature chunks fed one after another through `forward_chunk` with caches.
- RTF: processing seconds / audio seconds on one CPU thread, batch size 1, after warm-up
  ({rtf_scope}). For `full` rows it is offline decoding of one utterance at a time, so a
  full-context teacher and a streaming student are compared at the same thread count.
- RTF batched: decoding in batches{batch_note} (the row's context).
- Latency: algorithmic latency (chunk + right context); a full-context model waits for the
  end of the utterance. Params, MACs per second of audio and size (MB, fp32 parameters)
  describe the model; Graph MB is the size of the ONNX file that decoded the row (int8 rows:
  the ORT-quantised graph, `(int8)` after the model name).
- Cost per audio hour, over the RTF's timed spans: CPU s = CPU-seconds of the decoding process
  (all its threads) per hour of audio; J = joules of the CPU packages (RAPL, the whole
  machine) per hour of audio, "n/a (no RAPL)" where the machine exposes no readable RAPL
  counters (virtual machines, containers, non-Intel CPUs): no estimate stands in for it.
"""


def _check_notes(meta: dict) -> list[str]:
    """Where the WER of our models' rows comes from, and the batch-1 check of it (runs that
    score batched: ``meta["check"]``); nothing for older results. Rows whose batch-1 pass
    covered their subset (check ``wer_from`` "batch-1") are named apart: nothing compared."""
    checks = meta.get("check")
    if checks is None:
        return []
    whole = [key for key, c in checks.items() if c.get("wer_from") == "batch-1"]
    compared = {key: c for key, c in checks.items() if key not in whole}
    which = "the other" if whole else "the"
    notes = [_compared_note(meta, compared, which)] if compared else []
    if whole:
        notes.append(
            f"- WER/CER of {len(whole)} `{meta.get('runtime')}` row(s) from their batch-1 pass "
            "over every utterance (the RTF's sample covers the subset, so no batched pass ran "
            "and nothing was compared): " + ", ".join(f"`{k}`" for k in whole) + "."
        )
    return [*notes, ""]


def _compared_note(meta: dict, checks: dict, which: str) -> str:
    first = meta.get("check_utts")
    differ = {key: c for key, c in checks.items() if c["differ"]}
    verdict = (
        f"equal in all {len(checks)} rows"
        if not differ
        else "DIFFERENT in "
        + ", ".join(f"`{k}` ({c['differ']} of {c['utts']})" for k, c in differ.items())
    )
    max_utts = meta.get("rtf_max_utts")
    return (
        f"- WER/CER of {which} `{meta.get('runtime')}` rows: batched decoding on "
        f"{meta.get('device', 'cpu')} (stream rows: the chunk-masked forward, equal to "
        f"`forward_chunk`); their RTF: batch 1 over the first "
        f"{'all' if max_utts is None else max_utts} utterances. Check, the first "
        f"{'all' if first is None else first} transcripts of that batch-1 pass against the "
        f"batched ones: {verdict}."
    )


def _subset_heading(subset: str, first: dict, meta: dict) -> str:
    """``## test (143 utterances, 6.0 min; 2 cut(s) dropped by asr-kd-prepare: too_short 2)``:
    the size evaluated, and what preparation dropped from the subset (``meta["prepare"]``)."""
    notes = []
    if first.get("num_utts") is not None and first.get("audio_s") is not None:
        notes.append(f"{first['num_utts']} utterances, {first['audio_s'] / 60:.1f} min")
    dropped = ((meta.get("prepare") or {}).get("subsets") or {}).get(subset) or {}
    if dropped.get("skipped"):
        note = f"{dropped['skipped']} cut(s) dropped by asr-kd-prepare"
        reasons = ", ".join(f"{r} {n}" for r, n in (dropped.get("reasons") or {}).items())
        notes.append(f"{note}: {reasons}" if reasons else note)
    return f"## {subset}" + (f" ({'; '.join(notes)})" if notes else "")


def _fbank_notes(rows: Sequence[dict]) -> list[str]:
    """sherpa-onnx rows time the fbank too: their RTF without it, the other rows' scope."""
    notes = [
        f"- `{r['model']}` `{r['mode']}`: RTF {fmt(r['rtf'], '.4f')} of which the fbank "
        f"{fmt(r['rtf'] - r['rtf_without_fbank'], '.4f')}; without it "
        f"{fmt(r['rtf_without_fbank'], '.4f')} (the scope of the other rows)"
        for r in rows
        if r.get("rtf_without_fbank") is not None and r.get("rtf") is not None
    ]
    return notes + [""] if notes else []


def render_markdown(results: dict) -> str:
    """The human-readable report: one table per subset, models x modes."""
    rows, meta = results["rows"], results.get("meta", {})
    batch_note = ""
    if meta.get("batch_max_duration_s"):
        batch_note = f" of up to {meta['batch_max_duration_s']:g} s of audio"
    if meta.get("batch_threads"):
        batch_note += f" on {meta['batch_threads']} thread(s), device {meta.get('device', 'cpu')}"
    lines = _header(meta)
    scope = meta.get("rtf_scope", "model and greedy CTC search")
    lines += [_LEGEND.format(rtf_scope=scope, batch_note=batch_note)]
    lines += _check_notes(meta)
    for subset in _subsets(rows):
        subset_rows = [r for r in rows if r["subset"] == subset]
        lines += [_subset_heading(subset, subset_rows[0], meta), ""]
        lines += _table(subset_rows)
        lines.append("")
        lines += _fbank_notes(subset_rows)
        lines += _distill_table(subset_rows)
        lines += _hotword_table(subset_rows, meta)
    return "\n".join(lines)


def _latency_x(rows: Sequence[dict]) -> tuple[dict[int, float], float]:
    """Full-context rows have no finite latency: place them right of the largest chunk."""
    finite = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
    full_x = 2.0 * max(finite) if finite else 1000.0
    xs = {id(r): (full_x if r["latency_ms"] is None else float(r["latency_ms"])) for r in rows}
    return xs, full_x


def _figure(num_subsets: int):
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, num_subsets, figsize=(5.5 * num_subsets, 4.2), squeeze=False, constrained_layout=True
    )
    return plt, fig, axes[0]


def plot_wer_vs_latency(rows: Sequence[dict], path: str | Path) -> Path:
    """WER against algorithmic latency, one line per model, one panel per subset."""
    subsets = _subsets(rows)
    plt, fig, axes = _figure(len(subsets))
    for ax, subset in zip(axes, subsets, strict=True):
        subset_rows = [r for r in rows if r["subset"] == subset]
        xs, full_x = _latency_x(subset_rows)
        for model in dict.fromkeys(row_label(r) for r in subset_rows):
            points = sorted((xs[id(r)], r["wer"]) for r in subset_rows if row_label(r) == model)
            ax.plot(*zip(*points, strict=True), marker="o", label=model)
        ticks = sorted({x for x in xs.values() if x != full_x})
        ax.set_xticks(ticks + [full_x], [f"{t:g}" for t in ticks] + ["full"])
        ax.set(title=subset, xlabel="algorithmic latency (ms)", ylabel="WER (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _plot_wer_vs(
    rows: Sequence[dict], key: str, xlabel: str, path: str | Path, log: bool = True
) -> Path:
    """WER against ``row[key]`` (log scale unless ``log`` is False; rows without it are left
    out): colour = model, marker = mode, one panel per subset."""
    subsets = _subsets(rows)
    plt, fig, axes = _figure(len(subsets))
    models = list(dict.fromkeys(row_label(r) for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    markers = "os^Dv<>Pp*"
    for ax, subset in zip(axes, subsets, strict=True):
        for r in (r for r in rows if r["subset"] == subset and r.get(key) is not None):
            ax.scatter(
                r[key],
                r["wer"],
                color=f"C{models.index(row_label(r)) % 10}",
                marker=markers[modes.index(r["mode"]) % len(markers)],
                label=f"{row_label(r)} ({r['mode']})",
                s=48,
            )
        if log:
            ax.set_xscale("log")
        ax.set(title=subset, xlabel=xlabel, ylabel="WER (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_wer_vs_macs(rows: Sequence[dict], path: str | Path) -> Path:
    """WER against compute (MACs per second of audio, log scale): colour = model, marker = mode."""
    return _plot_wer_vs(rows, "macs_per_audio_s", "MACs per second of audio", path)


def plot_wer_vs_cpu(rows: Sequence[dict], path: str | Path) -> Path:
    """WER against cost (CPU-seconds per audio hour, log scale): colour = model, marker = mode."""
    return _plot_wer_vs(rows, "cpu_s_per_audio_h", "CPU-seconds per audio hour", path)


def plot_wer_vs_agreement(rows: Sequence[dict], path: str | Path) -> Path:
    """WER against the frame agreement with the teacher (non-blank frames, percent): colour =
    model, marker = mode; rows compared with no teacher are left out."""
    return _plot_wer_vs(
        rows, "agree_nonblank", "agreement with the teacher, non-blank frames (%)", path, False
    )


def write_report(results: dict, out_dir: str | Path) -> list[Path]:
    """Write results.md, wer_vs_latency.png, wer_vs_macs.png and (when the rows have the
    figures) wer_vs_cpu.png and wer_vs_agreement.png into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "results.md"
    md.write_text(render_markdown(results))
    written = [md]
    if results["rows"]:
        written.append(plot_wer_vs_latency(results["rows"], out_dir / "wer_vs_latency.png"))
        written.append(plot_wer_vs_macs(results["rows"], out_dir / "wer_vs_macs.png"))
    if any(r.get("cpu_s_per_audio_h") is not None for r in results["rows"]):
        written.append(plot_wer_vs_cpu(results["rows"], out_dir / "wer_vs_cpu.png"))
    if any(r.get("agree_nonblank") is not None for r in results["rows"]):
        written.append(plot_wer_vs_agreement(results["rows"], out_dir / "wer_vs_agreement.png"))
    return written


def write_results(results: dict, out_dir: str | Path, plots: bool = True) -> None:
    """``results.json`` and results.md, and with ``plots`` the plots, into ``out_dir``."""
    out_dir = Path(out_dir)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if plots:
        write_report(results, out_dir)
    else:
        (out_dir / "results.md").write_text(render_markdown(results))


def summary(results: dict, out_dir: str) -> str:
    """The table ``asr-kd-evaluate`` prints: model, subset, mode, WER, CER and RTF per row."""
    lines = [f"{'model':<18} {'subset':<10} {'mode':<14} {'WER':>7} {'CER':>7} {'RTF':>8}"]
    for r in results["rows"]:
        lines.append(
            f"{row_label(r):<18} {r['subset']:<10} {r['mode']:<14} "
            f"{r['wer']:>7.2f} {r['cer']:>7.2f} {r['rtf']:>8.4f}"
        )
    lines.append(f"report: {out_dir}/results.md, results.json, plots")
    return "\n".join(lines)
