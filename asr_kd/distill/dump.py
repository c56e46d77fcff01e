"""The dump of soft targets: a teacher checkpoint over prepared subsets -> a target store.

Runs the teacher batched, without grad, over the cuts of one or more prepared subsets and writes
its top-k posteriors into the store format of :mod:`asr_kd.distill.store`.

Resumable: a restart skips the cuts of committed shards (their batches are not even run through
the teacher) and rewrites ``index.json`` at the end. Resuming with another teacher is an error.
A restart trusts no shard blindly: every committed shard of the subsets it dumps must match the
size and SHA-256 its ``.json`` records (a shard from before those were recorded: its arrays must
load), and an unreadable ``.json`` commits nothing; a shard that fails is removed and its cuts
are dumped again (into a new shard number; the index lists only what is on disk). So the repair
of a damaged store is the same command again, which is what opening one says.

``verify=true`` only checks an existing store: every shard file's size and SHA-256 against
``index.json`` (:meth:`SoftTargetStore.verify`), then exits; it needs no ``teacher_ckpt`` and
dumps nothing. A damaged store raises ``BadFileError`` naming each bad file and the repair.

One store may hold several subsets (``subsets=train``, then ``subsets=extra``, or
``subsets=[train,extra]``): each shard records its data identity, the subset name and the SHA-256
of the decompressed ``cuts_<subset>.jsonl.gz``. Resuming a subset whose cuts file changed since
(a re-prepared data dir: other features under the same cut ids) is an error, as is resuming into
a store written before data identities were recorded; another subset appends. Cut ids must be
unique across the subsets of one store (the store is keyed by cut id).

A transformers teacher (``teacher_ckpt=hf:<dir|hub id>[@revision]``) reads each cut's audio
(:mod:`asr_kd.distill.hf_teacher`); its targets are stored in the student's vocabulary at
``student_frame_shift_ms`` (the frame conversion is in the fingerprint). ``bf16=true`` runs
either kind of teacher under bfloat16 autocast, ``tf32=true`` lets CUDA use TF32; the precision
is recorded in every shard and the index (absent: fp32), and a resume in another is refused.

Split over ranks (``world_size=N rank=i``, or torchrun's environment): each rank dumps the cuts
:func:`~asr_kd.distill.store.ranks.rank_of` gives it into its own shard numbers, and the last to
finish merges ``index.json`` (``merge=true``: merge only). One process is the dump as before.

Batches hold ``max_duration`` seconds of audio; each batch's
targets go to the shard writer at once, so memory holds one batch and one shard, never a
subset. The throughput (audio seconds per second) is on the progress bar and in the summary.

Usage:
    asr-kd-dump-targets teacher_ckpt=exp/teacher/checkpoints/last.ckpt data.dir=DATA \\
        subsets=train out_dir=exp/targets k=8 temperature=2.0
    asr-kd-dump-targets ... subsets=[train,extra]    # two subsets, one store
    asr-kd-dump-targets ... subsets=[train,extra] pseudo_labels=true   # + teacher transcripts
    asr-kd-dump-targets out_dir=exp/targets verify=true   # check every checksum, dump nothing
    asr-kd-dump-targets teacher_ckpt=hf:facebook/wav2vec2-conformer-rope-large-960h-ft \\
        data.dir=DATA subsets=train out_dir=exp/targets_hf device=cuda bf16=true
    asr-kd-dump-targets ... device=cuda:1 bf16=true world_size=4 rank=1   # one of 4 GPUs
    asr-kd-dump-targets ... merge=true      # index.json from every rank's shards

    summary = dump_targets(compose("dump_targets", [...overrides]))
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from asr_kd.config import as_list, save_config
from asr_kd.data.datamodule import build_datamodule
from asr_kd.data.features import FRAME_SHIFT_MS
from asr_kd.distill.hidden import check_layers
from asr_kd.distill.output import TeacherOutput
from asr_kd.distill.pseudo import CONFIDENCE, labels_summary
from asr_kd.distill.store import (
    LABELS_SUFFIX,
    CodecStats,
    DumpRank,
    ShardWriter,
    SoftTargetStore,
    bytes_per_frame,
    check_fingerprint,
    codec_bytes_per_frame,
    codec_name,
    committed_shards,
    data_identity,
    encode_hidden,
    file_record,
    fit_codec,
    hidden_suffix,
    missing_cuts,
    parse_compress,
    remove_shard,
    save_array_once,
    shard_markers,
    shard_problems,
    shard_stem,
    write_index,
)
from asr_kd.distill.teacher import Teacher, open_teacher
from asr_kd.errors import BadFileError, ConfigError
from asr_kd.models.loading import resolve_device

__all__ = ["dump_targets"]

log = logging.getLogger(__name__)

FP32 = "fp32"  # the precision of a dump without bf16 / tf32 (stores record no precision then)
_ONE_RANK = DumpRank()  # a dump in one process: every cut, shards 0, 1, 2, ...


@dataclass
class HiddenDump:
    """The teacher layers a dump stores (1-based, sorted, unique), their codec
    (``hidden_compress``) and its fitted parameters per layer (:func:`fit_codec`)."""

    layers: tuple[int, ...]
    compress: str
    params: dict[int, np.ndarray]

    def encode(self, hidden: Sequence[torch.Tensor], lens: Sequence[int]) -> list[dict]:
        """Per cut of the batch, its stored arrays by file suffix ((T'_b, C) views), from the
        (B, T', D) outputs of ``self.layers`` (``TeacherOutput.hidden``: one per layer, in that
        order) and the cuts' frame counts ``lens`` (B,). Each layer is coded once for the whole
        padded batch: one array operation per batch, not per cut. Every codec acts on each
        frame alone, so a cut's codes are those of the cut alone (pca<N>'s matrix product may
        round one fp16 unit in the last place apart on another batch shape)."""
        codes = {
            hidden_suffix(layer): encode_hidden(
                self.compress, self.params[layer], h.float().cpu().numpy()
            )
            for layer, h in zip(self.layers, hidden, strict=True)
        }
        return [
            {suffix: c[b, :frames] for suffix, c in codes.items()} for b, frames in enumerate(lens)
        ]


def _teacher_batches(
    soft_targets,
    batches: Iterable[dict],
    done: set[str],
    hidden: HiddenDump | None = None,
    decode=None,
):
    """Per batch, yield (cuts in the batch, seconds of audio run, [(cut_id, ids (T', k) int16,
    probs (T', k) fp16, {suffix: stored teacher layer (T', C)} or None, label)]) for the cuts not
    in ``done``; a batch whose cuts are all done is not run. ``soft_targets(batch) ->
    TeacherOutput`` (``hidden``: the layers of ``hidden.layers``, in order). ``label``: None, or
    with ``decode`` (token ids -> text) the teacher's greedy transcript ``{"text", "confidence",
    "num_tokens"}`` (``soft_targets.greedy()``, :func:`asr_kd.distill.pseudo.greedy_labels`)."""
    for batch in batches:
        todo = [i for i, cut_id in enumerate(batch["cut_ids"]) if cut_id not in done]
        if not todo:
            yield len(batch["cut_ids"]), 0.0, []
            continue
        with torch.inference_mode():
            out = TeacherOutput(*soft_targets(batch))
            greedy = soft_targets.greedy() if decode is not None else None
        ids = out.ids.to(torch.int16).cpu().numpy()
        probs = out.probs.to(torch.float16).cpu().numpy()
        lens = out.lens.cpu().tolist()
        coded = hidden.encode(out.hidden, lens) if hidden is not None else [None] * len(lens)
        records = [
            (
                batch["cut_ids"][i],
                ids[i, : lens[i]],
                probs[i, : lens[i]],
                coded[i],
                _label(greedy, i, decode),
            )
            for i in todo
        ]
        seconds = float(batch["feat_lens"].sum()) * FRAME_SHIFT_MS / 1000.0
        yield len(batch["cut_ids"]), seconds, records


def _label(greedy, i: int, decode) -> dict | None:
    if greedy is None:
        return None
    tokens, confidence = greedy[i]
    return {"text": decode(tokens), "confidence": round(confidence, 6), "num_tokens": len(tokens)}


def _fit_stats(cfg: DictConfig, dm, teacher: _Teacher) -> dict[int, CodecStats]:
    """Statistics of the teacher's ``teacher.layers`` over the first ``hidden_fit_frames`` valid
    frames of subset ``hidden_fit_subset`` (in the dump's own order)."""
    layers = teacher.layers
    stats = {layer: CodecStats(teacher.hidden_dim) for layer in layers}
    batches = dm.dataloader(
        cfg.hidden_fit_subset,
        shuffle=False,
        max_duration=cfg.data.max_duration,
        with_audio=teacher.needs_audio,
    )
    for batch in tqdm(batches, unit="batch", desc=f"fit {cfg.hidden_compress}"):
        with torch.inference_mode():
            out = TeacherOutput(*teacher.targets(batch))
        lens = out.lens.to(out.hidden[0].device)
        valid = torch.arange(out.hidden[0].shape[1], device=lens.device)[None] < lens[:, None]
        for layer, h in zip(layers, out.hidden, strict=True):
            stats[layer].update(h[valid].float().cpu().numpy())
        if stats[layers[0]].count >= int(cfg.hidden_fit_frames):
            break
    return stats


def _hidden_codecs(cfg: DictConfig, dm, teacher: _Teacher) -> tuple[dict, dict]:
    """(codec parameters per layer of ``teacher.layers``, their files' records): read from
    ``out_dir`` when a previous run of this dump wrote them (a resume keeps its codec), else
    fitted and written."""
    out_dir, spec, layers = Path(cfg.out_dir), str(cfg.hidden_compress), teacher.layers
    paths = {layer: out_dir / codec_name(layer, spec) for layer in layers}
    if all(path.is_file() for path in paths.values()):
        params = {layer: np.load(path) for layer, path in paths.items()}
        records = {path.name: file_record(path) for path in paths.values()}
        return params, records
    if parse_compress(spec)[0] == "none":
        params = {layer: fit_codec(spec, CodecStats(teacher.hidden_dim)) for layer in layers}
    else:
        stats = _fit_stats(cfg, dm, teacher)
        params = {layer: fit_codec(spec, stats[layer]) for layer in layers}
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = {layer: save_array_once(paths[layer], params[layer]) for layer in layers}
    params = {layer: array for layer, (array, _) in saved.items()}
    records = {paths[layer].name: record for layer, (_, record) in saved.items()}
    return params, records


def _hidden_layers(cfg: DictConfig, num_layers: int) -> tuple[int, ...]:
    """``hidden_layers`` checked against the teacher's ``num_layers``: sorted, unique; () for
    null."""
    layers = cfg.get("hidden_layers")
    if not layers:
        return ()
    checked = check_layers("hidden_layers", list(layers), int(num_layers), "teacher")
    return tuple(sorted(set(checked)))


def _resume_state(
    out_dir: Path,
    fingerprint: dict,
    data: dict,
    codec: dict | None = None,
    precision: str | None = None,
    rank: DumpRank = _ONE_RANK,
) -> tuple[int, set[str], dict[str, str]]:
    """(this ``rank``'s first shard number, cuts of ``data["subset"]`` already committed, cut id
    -> subset of the other subsets' cuts) after checking the committed shards: another teacher,
    another codec of the stored teacher layers (``codec``: file name -> SHA-256), another
    ``precision`` (None: not checked), unknown data (a store written before data identities) or
    other cuts under this subset's name are errors."""
    committed = committed_shards(out_dir)
    done: set[str] = set()
    taken: dict[str, str] = {}
    redo = f"delete {out_dir} to dump again, or use another out_dir"
    for shard, meta in committed.items():
        where = out_dir / f"shard_{shard:05d}.json"
        check_fingerprint(meta["fingerprint"], fingerprint, str(where))
        if precision is not None and meta.get("precision", FP32) != precision:
            raise BadFileError(
                f"cannot resume into {out_dir}: {where} was dumped in "
                f"{meta.get('precision', FP32)}, this dump runs in {precision}; set bf16/tf32 as "
                f"that dump did, or {redo}"
            )
        if codec is not None and (meta.get("codec_sha256") or {}) != codec:
            raise BadFileError(
                f"cannot resume into {out_dir}: {where} was encoded with other hidden-layer "
                f"codec files ({meta.get('codec_sha256')}) than those in {out_dir} ({codec}); "
                f"{redo}"
            )
        stored = meta.get("data")
        if stored is None:
            raise BadFileError(
                f"cannot resume subsets={data['subset']} into {out_dir}: {where} records no data "
                "identity (written before asr-kd-dump-targets hashed the cuts), so its targets "
                f"may come from other features under the same cut ids; {redo} (the store "
                "still reads fine for distillation)"
            )
        if stored["subset"] != data["subset"]:
            taken.update(dict.fromkeys(meta["cuts"], stored["subset"]))
        elif stored["cuts_sha256"] != data["cuts_sha256"]:
            raise BadFileError(
                f"subset {data['subset']!r} in {out_dir} was dumped from other cuts: cuts_sha256 "
                f"{stored['cuts_sha256']} ({stored['data_dir']}, {where}) != "
                f"{data['cuts_sha256']} ({data['data_dir']}/cuts_{data['subset']}.jsonl.gz); "
                f"the data dir was re-prepared since, expected the same cuts; {redo}"
            )
        else:
            done.update(meta["cuts"])
    return rank.first_shard(committed), done, taken


def _drop_unreadable_markers(out_dir: Path) -> list[str]:
    """Remove the shards whose ``.json`` does not parse (a marker cut short commits nothing);
    return their names. Their cuts are dumped again when their subset is."""
    dropped = []
    for shard, (meta, _) in shard_markers(out_dir).items():
        if meta is None:
            log.warning(
                "%s: %s.json is unreadable (truncated?), so the shard is not committed: removed, "
                "its cuts are dumped again",
                out_dir,
                shard_stem(shard),
            )
            remove_shard(out_dir, shard)
            dropped.append(shard_stem(shard))
    return dropped


def _drop_damaged_shards(out_dir: Path, subsets: set[str], labels: bool = False) -> list[str]:
    """Remove the committed shards of ``subsets`` whose files fail their size or SHA-256 (or, from
    before those were recorded, do not load), and with ``labels`` those dumped without
    pseudo-labels; return their names. Their cuts are dumped again."""
    dropped = []
    for shard, meta in committed_shards(out_dir).items():
        if (meta.get("data") or {}).get("subset") not in subsets:
            continue  # another subset's shards are checked when that subset is resumed
        damage = [d.text for d in shard_problems(out_dir, shard, meta, read_data=True)]
        if labels and f"{shard_stem(shard)}{LABELS_SUFFIX}" not in meta.get("files", {}):
            damage.append("dumped without pseudo_labels=true")
        if damage:
            log.warning(
                "%s: %s is damaged (%s): removed, its cuts are dumped again",
                out_dir,
                shard_stem(shard),
                ", ".join(damage),
            )
            remove_shard(out_dir, shard)
            dropped.append(shard_stem(shard))
    return dropped


def _writer(
    cfg: DictConfig, teacher: _Teacher, data: dict, codec: dict, rank: DumpRank
) -> tuple[ShardWriter, set[str], dict[str, str]]:
    """(the shard writer of ``rank`` for subset ``data["subset"]``, its cuts already committed,
    cut id -> subset of the other subsets' cuts): :func:`_resume_state`, then the header every
    shard's ``.json`` carries."""
    out_dir, fingerprint = Path(cfg.out_dir), teacher.fingerprint
    first_shard, done, taken = _resume_state(
        out_dir, fingerprint, data, codec, teacher.precision, rank
    )
    header = {"fingerprint": fingerprint, "data": data}
    if codec:
        header["codec_sha256"] = codec
    if teacher.precision != FP32:  # absent: fp32, as every store written before bf16 dumps
        header["precision"] = teacher.precision
    labels = bool(cfg.get("pseudo_labels", False))
    if labels:
        header["pseudo_labels"] = {"decoder": "greedy_ctc", "confidence": CONFIDENCE}
    writer = ShardWriter(
        out_dir, header, first_shard, cfg.shard_frames, labels=labels, stride=rank.world_size
    )
    return writer, done, taken


def _dump_subset(
    cfg: DictConfig,
    dm,
    teacher: _Teacher,
    data: dict,
    total: int | None,
    hidden: tuple[HiddenDump, dict] | None = None,
    rank: DumpRank = _ONE_RANK,
) -> tuple[int, dict]:
    """Append ``rank``'s soft targets of subset ``data["subset"]`` (``data``, ``total``: from
    ``data_identity``; ``hidden``: the layers to store and their codec files' SHA-256) to the
    store in ``cfg.out_dir``; return the cuts resumed and the throughput (``{"audio_s",
    "seconds", "audio_s_per_s"}`` of the batches run)."""
    out_dir, subset = Path(cfg.out_dir), data["subset"]
    spec, codec = hidden if hidden is not None else (None, {})
    batches = dm.dataloader(
        subset, shuffle=False, max_duration=cfg.data.max_duration, with_audio=teacher.needs_audio
    )
    if rank.split:  # lhotse's sampler filter: batches are filled with this rank's cuts only
        batches.sampler.filter(lambda cut: rank.owns(cut.id))
        total = None  # this rank's share is known only once its cuts are read
    writer, done, taken = _writer(cfg, teacher, data, codec, rank)
    labels = writer.labels
    decode = teacher.teacher.tokenizer.decode if labels else None
    audio_s, start = 0.0, time.perf_counter()
    runs = _teacher_batches(teacher.targets, batches, done, spec, decode)
    desc = f"dump {subset}" + (f" ({rank})" if rank.split else "")
    with tqdm(total=total, unit="cut", desc=desc) as progress:
        for num_cuts, seconds, records in runs:
            audio_s += seconds
            for cut_id, ids, probs, extra, label in records:
                if cut_id in taken:
                    raise ConfigError(
                        f"cut {cut_id!r} of subset {subset!r} already has soft targets from "
                        f"subset {taken[cut_id]!r} in {out_dir}; expected cut ids unique across "
                        "the subsets of one store"
                    )
                writer.add(cut_id, ids, probs, extra, label)
            progress.update(num_cuts)
            progress.set_postfix_str(f"{audio_s / (time.perf_counter() - start):.1f} audio-s/s")
    writer.flush()
    elapsed = time.perf_counter() - start
    speed = {"audio_s": round(audio_s, 3), "seconds": round(elapsed, 3)}
    speed["audio_s_per_s"] = round(audio_s / elapsed, 3) if elapsed > 0 else None
    log.info(
        "dump %s: %.1f s of audio in %.1f s (%s audio-s/s)",
        subset,
        audio_s,
        elapsed,
        speed["audio_s_per_s"],
    )
    return (sum(map(rank.owns, done)) if rank.split else len(done)), speed


def _subset_names(subset: str | Sequence[str]) -> list[str]:
    """``subsets=train`` or ``subsets=[train,extra]`` -> the names, in order, without repeats."""
    names = [str(s) for s in as_list(subset)]
    if not names:
        raise ConfigError("subsets=[] names no subset to dump; expected a name or a list of names")
    return names


def _hidden_index(spec: HiddenDump, records: dict, dim: int) -> dict:
    """The ``index.json`` entry of the stored teacher layers, with bytes per frame."""
    return {
        "layers": list(spec.layers),
        "compress": spec.compress,
        "dims": {str(layer): dim for layer in spec.layers},
        "codec_files": records,
        "raw_bytes_per_frame": len(spec.layers) * codec_bytes_per_frame("none", dim),
        "bytes_per_frame": len(spec.layers) * codec_bytes_per_frame(spec.compress, dim),
    }


def dump_targets(cfg: DictConfig) -> dict:
    """Dump the teacher's soft targets for ``cfg.subsets`` (a name or a list) into ``cfg.out_dir``
    (with ``cfg.hidden_layers``, also those teacher layers, coded per ``cfg.hidden_compress``;
    with ``world_size`` > 1, only this ``rank``'s cuts); return the summary of the whole store,
    or, from a rank that finishes before the others, of its own part."""
    out_dir = Path(cfg.out_dir)
    if cfg.get("verify", False):
        return SoftTargetStore(out_dir).verify()
    rank = DumpRank.resolve(cfg.get("world_size"), cfg.get("rank"))
    compress = str(cfg.get("hidden_compress", "none"))
    parse_compress(compress)  # a bad spec fails before any output
    if rank.rank == 0:  # one writer: ranks side by side would interleave the file
        save_config(cfg, out_dir)
    teacher = _teacher(cfg, _rank_device(cfg.device, rank), compress)
    fingerprint, vocab = teacher.fingerprint, teacher.teacher.tokenizer.vocab_size
    dm = build_datamodule(cfg.data)
    teacher.teacher.check_vocab(dm.tokenizer, f"{cfg.data.dir}/lang")
    # Every subset's identity first: a missing or re-prepared one fails now, not after hours.
    identities = [data_identity(Path(cfg.data.dir), s) for s in _subset_names(cfg.subsets)]
    removed = _drop_unreadable_markers(out_dir) if out_dir.is_dir() else []
    for data, _ in identities:
        _resume_state(out_dir, fingerprint, data, precision=teacher.precision)  # codec: below
    labels = bool(cfg.get("pseudo_labels", False))
    removed += _drop_damaged_shards(out_dir, {data["subset"] for data, _ in identities}, labels)
    hidden, extra = None, {}
    if teacher.layers:
        params, records = _hidden_codecs(cfg, dm, teacher)
        spec = HiddenDump(teacher.layers, compress, params)
        hidden = (spec, {name: r["sha256"] for name, r in records.items()})
        extra["hidden"] = _hidden_index(spec, records, teacher.hidden_dim)
    if teacher.precision != FP32:
        extra["precision"] = teacher.precision
    merge_only, resumed, throughput, index = bool(cfg.get("merge", False)), 0, {}, None
    for i, (data, total) in enumerate(identities):
        subset = data["subset"]
        if not merge_only:
            cuts_resumed, throughput[subset] = _dump_subset(
                cfg, dm, teacher, data, total, hidden, rank
            )
            resumed += cuts_resumed
        # "subset"/"data_dir" name the latest dump; "subsets" lists every one
        extra.update(subset=subset, data_dir=str(cfg.data.dir), vocab_size=vocab)
        extra["teacher_ckpt"] = str(cfg.teacher_ckpt)  # for the repair command of a damaged store
        index = _merge_index(out_dir, fingerprint, extra, identities[: i + 1], merge_only)
    if index is None:  # other ranks still hold cuts: the last one to finish merges
        return _rank_summary(out_dir, rank, resumed, removed, throughput, identities)
    summary = _summary(index, resumed, removed, vocab, throughput)
    if labels:
        summary["pseudo_labels"] = _labels_report(out_dir, index)
    return summary


def _rank_device(name: str, rank: DumpRank) -> torch.device:
    """``device`` for this rank: a bare ``cuda`` (or ``auto`` on a GPU machine) of a split dump
    is GPU ``LOCAL_RANK`` (torchrun), else ``rank`` modulo the GPUs, so ranks share no GPU."""
    device = resolve_device(name)
    if device.type != "cuda" or device.index is not None or not rank.split:
        return device
    local = os.environ.get("LOCAL_RANK")
    index = int(local) if local is not None else rank.rank
    return torch.device("cuda", index % max(torch.cuda.device_count(), 1))


def _merge_index(
    out_dir: Path, fingerprint: dict, extra: dict, identities: list, required: bool
) -> dict | None:
    """Merge the committed shards into ``index.json`` once every cut of the subsets of
    ``identities`` (``(data, number of cuts)``) is in one; return it, or None while some are
    not (``required``: a ``ConfigError`` naming them instead)."""
    counts = {data["subset"]: total for data, total in identities}
    missing = {s: n for s, n in missing_cuts(committed_shards(out_dir), counts).items() if n}
    if not missing:
        return write_index(out_dir, fingerprint, extra)
    if required:
        which = ", ".join(f"{n} of {counts[s]} cuts of {s!r}" for s, n in missing.items())
        raise ConfigError(
            f"cannot merge {out_dir}: {which} are in no committed shard yet; expected every rank "
            "finished: re-run the rank that was stopped (the same command with its rank=; it "
            "resumes and merges when it is the last)"
        )
    return None


def _rank_summary(
    out_dir: Path,
    rank: DumpRank,
    resumed: int,
    removed: list[str],
    throughput: dict,
    identities: list,
) -> dict:
    """What a rank that finishes before the others prints: its part, and what is left."""
    counts = {data["subset"]: total for data, total in identities}
    missing = missing_cuts(committed_shards(out_dir), counts)
    log.info(
        "%s done; %s cuts not dumped yet (other ranks): index.json is merged by the last rank "
        "to finish, or by merge=true",
        rank,
        sum(missing.values()),
    )
    return {
        "out_dir": str(out_dir),
        "rank": rank.rank,
        "world_size": rank.world_size,
        "merged": False,
        "missing_cuts": missing,
        "resumed_cuts": resumed,
        "removed_shards": removed,
        "throughput": throughput,
    }


def _summary(index: dict, resumed: int, removed: list[str], vocab: int, throughput: dict) -> dict:
    """What the dump prints: the index without the per-cut and per-shard tables, bytes, and
    this run's throughput per subset."""
    summary = {k_: v for k_, v in index.items() if k_ not in ("cuts", "shards")}
    summary["num_shards"] = len(index["shards"])
    summary["resumed_cuts"] = resumed
    summary["removed_shards"] = removed  # damaged: their cuts were dumped again
    summary["fp32_bytes_per_frame"] = 4 * vocab
    hidden = index.get("hidden")
    if hidden:
        log.info(
            "bytes per frame: top-%d posteriors %d, teacher layers %s raw (fp16) %d, stored "
            "(%s) %d",
            index["fingerprint"]["k"],
            bytes_per_frame(index["fingerprint"]["k"]),
            hidden["layers"],
            hidden["raw_bytes_per_frame"],
            hidden["compress"],
            hidden["bytes_per_frame"],
        )
    summary["throughput"] = throughput  # this run's batches (device, load: see the log)
    return summary


class _Teacher(NamedTuple):
    teacher: Teacher  # the opened source (its tokenizer: the student's)
    targets: Callable[[dict], TeacherOutput]  # (batch) -> (ids, probs, lens, hidden), greedy()
    fingerprint: dict
    layers: tuple[int, ...] = ()  # teacher layers stored (``hidden_layers``), in ``hidden``
    precision: str = FP32  # fp32 | bf16 (autocast) | tf32 (CUDA matmuls and convolutions)

    @property
    def needs_audio(self) -> bool:  # batches must carry audio
        return self.teacher.needs_audio

    @property
    def hidden_dim(self) -> int:  # D_t, the width of each stored layer
        return self.teacher.hidden_size


def _precision(cfg: DictConfig, device: torch.device) -> str:
    """``bf16`` (the teacher's forward under bfloat16 autocast, any device), ``tf32`` (CUDA's
    TensorFloat-32 matmuls and convolutions, switched on here for this process) or ``fp32``."""
    if bool(cfg.get("bf16", False)):
        return "bf16"
    if bool(cfg.get("tf32", False)) and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return "tf32"
    return FP32


def _teacher(cfg: DictConfig, device, compress: str = "none") -> _Teacher:
    """The soft-target source of ``cfg.teacher_ckpt`` (:func:`open_teacher`: an asr_kd
    checkpoint, or ``hf:...`` converted to ``cfg.student_frame_shift_ms``; bf16 autocast when
    ``cfg.bf16``, TF32 on CUDA when ``cfg.tf32``), with the ``cfg.hidden_layers`` outputs (codec
    ``compress``) when asked."""
    precision = _precision(cfg, device)
    teacher = open_teacher(str(cfg.teacher_ckpt), device, precision == "bf16")
    layers = _hidden_layers(cfg, teacher.num_layers)
    shift = teacher.targets_shift_ms(float(cfg.get("student_frame_shift_ms", 40.0)))
    k, temperature = min(int(cfg.k), teacher.tokenizer.vocab_size), float(cfg.temperature)
    fingerprint = teacher.fingerprint(k, temperature, shift, layers, compress)
    targets = teacher.targets(temperature, k, layers, shift, device)
    return _Teacher(teacher, targets, fingerprint, layers, precision)


def _labels_report(out_dir: Path, index: dict) -> dict:
    """Per subset holding pseudo-labels, :func:`asr_kd.distill.pseudo.labels_summary`."""
    by_subset: dict[str, list[dict]] = {}
    for cut_id, label in SoftTargetStore(out_dir).pseudo_labels().items():
        subset = index["shards"][shard_stem(index["cuts"][cut_id][0])]["subset"]
        by_subset.setdefault(subset, []).append(label)
    report = {subset: labels_summary(records) for subset, records in by_subset.items()}
    for subset, entry in report.items():
        log.info(
            "pseudo-labels of %s: %d cuts (%d empty), mean confidence %.3f, kept at %s",
            subset, entry["cuts"], entry["empty"], entry["mean_confidence"], entry["kept_at"],
        )  # fmt: skip
    return report
