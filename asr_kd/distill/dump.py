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

``pseudo_labels=true`` also writes the teacher's greedy transcript of every cut, with a
confidence, into the store (:mod:`asr_kd.distill.pseudo`: the format and the confidence's
definition); the summary then counts, per subset, the labelled cuts and how many a
``distill.pseudo_min_confidence`` of 0.5 ... 0.95 would keep. Resuming with labels over shards
dumped without them removes those shards of the subsets it dumps and dumps their cuts again.

``verify=true`` only checks an existing store: every shard file's size and SHA-256 against
``index.json`` (:meth:`SoftTargetStore.verify`), then exits; it needs no ``teacher_ckpt`` and
dumps nothing. A damaged store raises ``BadFileError`` naming each bad file and the repair.

One store may hold several subsets (``subset=train``, then ``subset=extra``, or
``subset=[train,extra]``): each shard records its data identity, the subset name and the SHA-256
of the decompressed ``cuts_<subset>.jsonl.gz``. Resuming a subset whose cuts file changed since
(a re-prepared data dir: other features under the same cut ids) is an error, as is resuming into
a store written before data identities were recorded; another subset appends. Cut ids must be
unique across the subsets of one store (the store is keyed by cut id).

Usage:
    asr-kd-dump-targets teacher_ckpt=exp/teacher/checkpoints/last.ckpt data.dir=DATA \\
        subset=train out_dir=exp/targets k=8 temperature=2.0
    asr-kd-dump-targets ... subset=[train,extra]    # two subsets, one store
    asr-kd-dump-targets ... subset=[train,extra] pseudo_labels=true   # + teacher transcripts
    asr-kd-dump-targets out_dir=exp/targets verify=true   # check every checksum, dump nothing

    summary = dump_targets(compose("dump_targets", [...overrides]))
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from asr_kd.checkpoint import file_sha256
from asr_kd.config import as_list, save_config
from asr_kd.data.datamodule import build_datamodule
from asr_kd.distill.hidden import (
    CodecStats,
    check_layers,
    codec_bytes_per_frame,
    encode,
    fit_codec,
    parse_compress,
)
from asr_kd.distill.losses import soften_teacher
from asr_kd.distill.pseudo import CONFIDENCE, greedy_labels, labels_summary
from asr_kd.distill.store import (
    LABELS_SUFFIX,
    MAX_INT16_VOCAB,
    ShardWriter,
    SoftTargetStore,
    bytes_per_frame,
    check_fingerprint,
    codec_name,
    committed_shards,
    data_identity,
    hidden_suffix,
    remove_shard,
    save_array,
    shard_markers,
    shard_problems,
    shard_stem,
    teacher_fingerprint,
    write_index,
)
from asr_kd.errors import BadFileError, ConfigError
from asr_kd.models.loading import load_model, resolve_device

__all__ = ["dump_targets"]

log = logging.getLogger(__name__)


@dataclass
class HiddenDump:
    """The teacher layers a dump stores (1-based, sorted, unique), their codec
    (``hidden_compress``) and its fitted parameters per layer (:func:`fit_codec`)."""

    layers: tuple[int, ...]
    compress: str
    params: dict[int, np.ndarray]

    def encode(self, layer_outputs: Sequence[torch.Tensor], i: int, frames: int) -> dict:
        """Cut ``i``'s stored arrays by file suffix, from every teacher layer's (B, T', D)."""
        return {
            hidden_suffix(layer): encode(
                self.compress,
                self.params[layer],
                layer_outputs[layer - 1][i, :frames].float().cpu().numpy(),
            )
            for layer in self.layers
        }


def _run_teacher(model, feats, feat_lens, hidden: bool):
    """(log_probs, out_lens, every layer's output or None), without grad."""
    with torch.inference_mode():
        if hidden:
            return model(feats, feat_lens, return_hidden=True)
        return (*model(feats, feat_lens), None)


def _teacher_batches(
    model,
    batches: Iterable[dict],
    done: set[str],
    device,
    k: int,
    temperature: float,
    hidden: HiddenDump | None = None,
    decode=None,
):
    """Per batch, yield (cuts in the batch, [(cut_id, ids (T', k) int16, probs (T', k) fp16,
    {suffix: stored teacher layer (T', C)} or None, label)]) for the cuts not in ``done``; a
    batch whose cuts are all done is not run. ``label``: None, or with ``decode`` (token ids ->
    text) the teacher's greedy transcript ``{"text", "confidence", "num_tokens"}``
    (:func:`asr_kd.distill.pseudo.greedy_labels`)."""
    for batch in batches:
        todo = [i for i, cut_id in enumerate(batch["cut_ids"]) if cut_id not in done]
        if not todo:
            yield len(batch["cut_ids"]), []
            continue
        feats, feat_lens = batch["feats"].to(device), batch["feat_lens"].to(device)
        log_probs, out_lens, layers = _run_teacher(model, feats, feat_lens, hidden is not None)
        with torch.inference_mode():
            ids, probs = soften_teacher(log_probs, temperature, k)
            greedy = greedy_labels(log_probs, out_lens) if decode is not None else None
        ids = ids.to(torch.int16).cpu().numpy()
        probs = probs.to(torch.float16).cpu().numpy()
        lens = out_lens.cpu().tolist()
        records = [
            (
                batch["cut_ids"][i],
                ids[i, : lens[i]],
                probs[i, : lens[i]],
                hidden.encode(layers, i, lens[i]) if hidden is not None else None,
                _label(greedy, i, decode),
            )
            for i in todo
        ]
        yield len(batch["cut_ids"]), records


def _fit_stats(cfg: DictConfig, dm, model, layers: Sequence[int]) -> dict[int, CodecStats]:
    """Statistics of the teacher's ``layers`` over the first ``hidden_fit_frames`` valid frames
    of subset ``hidden_fit_subset`` (in the dump's own order)."""
    device = next(model.parameters()).device
    stats = {layer: CodecStats(int(model.d_model)) for layer in layers}
    batches = dm.dataloader(cfg.hidden_fit_subset, shuffle=False, max_duration=cfg.max_duration)
    for batch in tqdm(batches, unit="batch", desc=f"fit {cfg.hidden_compress}"):
        feats, feat_lens = batch["feats"].to(device), batch["feat_lens"].to(device)
        _, out_lens, outputs = _run_teacher(model, feats, feat_lens, hidden=True)
        valid = torch.arange(outputs[0].shape[1], device=device)[None] < out_lens[:, None]
        for layer in layers:
            stats[layer].update(outputs[layer - 1][valid].float().cpu().numpy())
        if stats[layers[0]].count >= int(cfg.hidden_fit_frames):
            break
    return stats


def _hidden_codecs(cfg: DictConfig, dm, model, layers: tuple[int, ...]) -> tuple[dict, dict]:
    """(codec parameters per layer, their files' records): read from ``out_dir`` when a
    previous run of this dump wrote them (a resume keeps its codec), else fitted and written."""
    out_dir, spec = Path(cfg.out_dir), str(cfg.hidden_compress)
    paths = {layer: out_dir / codec_name(layer, spec) for layer in layers}
    if all(path.is_file() for path in paths.values()):
        params = {layer: np.load(path) for layer, path in paths.items()}
        records = {path.name: {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
                   for path in paths.values()}  # fmt: skip
        return params, records
    if parse_compress(spec)[0] == "none":
        params = {layer: fit_codec(spec, CodecStats(int(model.d_model))) for layer in layers}
    else:
        stats = _fit_stats(cfg, dm, model, layers)
        params = {layer: fit_codec(spec, stats[layer]) for layer in layers}
    out_dir.mkdir(parents=True, exist_ok=True)
    records = {paths[layer].name: save_array(paths[layer], params[layer]) for layer in layers}
    return params, records


def _hidden_layers(cfg: DictConfig, model) -> tuple[int, ...]:
    """``hidden_layers`` checked against the teacher's layers: sorted, unique; () for null."""
    layers = cfg.get("hidden_layers")
    if not layers:
        return ()
    checked = check_layers("hidden_layers", list(layers), len(model.layers), "teacher")
    return tuple(sorted(set(checked)))


def _label(greedy, i: int, decode) -> dict | None:
    if greedy is None:
        return None
    tokens, confidence = greedy[i]
    return {"text": decode(tokens), "confidence": round(confidence, 6), "num_tokens": len(tokens)}


def _resume_state(
    out_dir: Path, fingerprint: dict, data: dict, codec: dict | None = None
) -> tuple[int, set[str], dict[str, str]]:
    """(next shard number, cuts of ``data["subset"]`` already committed, cut id -> subset of the
    other subsets' cuts) after checking the committed shards: another teacher, another codec of
    the stored teacher layers (``codec``: file name -> SHA-256), unknown data (a store written
    before data identities) or other cuts under this subset's name are errors."""
    committed = committed_shards(out_dir)
    done: set[str] = set()
    taken: dict[str, str] = {}
    redo = f"delete {out_dir} to dump again, or use another out_dir"
    for shard, meta in committed.items():
        where = out_dir / f"shard_{shard:05d}.json"
        check_fingerprint(meta["fingerprint"], fingerprint, str(where))
        if codec is not None and (meta.get("codec_sha256") or {}) != codec:
            raise BadFileError(
                f"cannot resume into {out_dir}: {where} was encoded with other hidden-layer "
                f"codec files ({meta.get('codec_sha256')}) than those in {out_dir} ({codec}); "
                f"{redo}"
            )
        stored = meta.get("data")
        if stored is None:
            raise BadFileError(
                f"cannot resume subset={data['subset']} into {out_dir}: {where} records no data "
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
    return max(committed, default=-1) + 1, done, taken


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
        damage = [d.text for d in shard_problems(out_dir, shard, meta, checksum=True)]
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


def _dump_subset(
    cfg: DictConfig,
    dm,
    teacher,
    fingerprint: dict,
    data: dict,
    total: int | None,
    hidden: tuple[HiddenDump, dict] | None = None,
) -> int:
    """Append the soft targets (and with ``cfg.pseudo_labels`` the transcripts) of subset
    ``data["subset"]`` (``data``, ``total``: from ``data_identity``; ``hidden``: the layers to
    store and their codec files' SHA-256) to the store in ``cfg.out_dir``; return the cuts
    resumed. ``teacher``: a loaded model, on its device."""
    out_dir, k, subset = Path(cfg.out_dir), fingerprint["k"], data["subset"]
    spec, codec = hidden if hidden is not None else (None, {})
    batches = dm.dataloader(subset, shuffle=False, max_duration=cfg.max_duration)
    first_shard, done, taken = _resume_state(out_dir, fingerprint, data, codec)
    labels = bool(cfg.get("pseudo_labels", False))
    header = {"fingerprint": fingerprint, "data": data}
    if codec:
        header["codec_sha256"] = codec
    if labels:
        header["pseudo_labels"] = {"decoder": "greedy_ctc", "confidence": CONFIDENCE}
    writer = ShardWriter(out_dir, header, first_shard, cfg.shard_frames, labels=labels)
    model = teacher.model
    device = next(model.parameters()).device
    decode = teacher.tokenizer.decode if labels else None
    runs = _teacher_batches(model, batches, done, device, k, cfg.temperature, spec, decode)
    with tqdm(total=total, unit="cut", desc=f"dump {subset}") as progress:
        for num_cuts, records in runs:
            for cut_id, ids, probs, extra, label in records:
                if cut_id in taken:
                    raise ConfigError(
                        f"cut {cut_id!r} of subset {subset!r} already has soft targets from "
                        f"subset {taken[cut_id]!r} in {out_dir}; expected cut ids unique across "
                        "the subsets of one store"
                    )
                writer.add(cut_id, ids, probs, extra, label)
            progress.update(num_cuts)
    writer.flush()
    return len(done)


def _subset_names(subset: str | Sequence[str]) -> list[str]:
    """``subset=train`` or ``subset=[train,extra]`` -> the names, in order, without repeats."""
    names = [str(s) for s in as_list(subset)]
    if not names:
        raise ConfigError("subset=[] names no subset to dump; expected a name or a list of names")
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
    """Dump the teacher's soft targets for ``cfg.subset`` (a name or a list) into ``cfg.out_dir``
    (with ``cfg.hidden_layers``, also those teacher layers, coded per ``cfg.hidden_compress``);
    return the summary of the whole store."""
    out_dir = Path(cfg.out_dir)
    if cfg.get("verify", False):
        return SoftTargetStore(out_dir).verify()
    compress = str(cfg.get("hidden_compress", "none"))
    parse_compress(compress)  # a bad spec fails before any output
    save_config(cfg, out_dir)
    device = resolve_device(cfg.device)
    teacher = load_model(cfg.teacher_ckpt)
    vocab = teacher.tokenizer.vocab_size
    if vocab > MAX_INT16_VOCAB:
        raise ConfigError(f"vocab {vocab} does not fit int16 ids (max {MAX_INT16_VOCAB})")
    k = min(int(cfg.k), vocab)
    layers = _hidden_layers(cfg, teacher.model)
    fingerprint = teacher_fingerprint(
        file_sha256(cfg.teacher_ckpt),
        teacher.tokenizer.fingerprint,
        teacher.model.frame_shift_ms,
        k,
        float(cfg.temperature),
        layers,
        compress,
    )
    dm = build_datamodule(cfg.data)
    if dm.tokenizer.fingerprint != teacher.tokenizer.fingerprint:
        raise ConfigError(
            f"tokenizer of {cfg.data.dir} ({dm.tokenizer.fingerprint}, vocab "
            f"{dm.tokenizer.vocab_size}) != teacher's ({teacher.tokenizer.fingerprint}, vocab "
            f"{vocab}) in {cfg.teacher_ckpt}"
        )
    # Every subset's identity first: a missing or re-prepared one fails now, not after hours.
    identities = [data_identity(Path(cfg.data.dir), s) for s in _subset_names(cfg.subset)]
    removed = _drop_unreadable_markers(out_dir) if out_dir.is_dir() else []
    for data, _ in identities:
        _resume_state(out_dir, fingerprint, data)  # the codec is checked per subset below
    labels = bool(cfg.get("pseudo_labels", False))
    removed += _drop_damaged_shards(out_dir, {data["subset"] for data, _ in identities}, labels)
    model = teacher.model.to(device)
    hidden, extra = None, {}
    if layers:
        params, records = _hidden_codecs(cfg, dm, model, layers)
        spec = HiddenDump(layers, compress, params)
        hidden = (spec, {name: r["sha256"] for name, r in records.items()})
        extra["hidden"] = _hidden_index(spec, records, int(model.d_model))
    resumed = 0
    for data, total in identities:
        subset = data["subset"]
        resumed += _dump_subset(cfg, dm, teacher, fingerprint, data, total, hidden)
        # "subset"/"data_dir" name the latest dump (as before); "subsets" lists every one
        extra.update(subset=subset, data_dir=str(cfg.data.dir), vocab_size=vocab)
        extra["teacher_ckpt"] = str(cfg.teacher_ckpt)  # for the repair command of a damaged store
        index = write_index(out_dir, fingerprint, extra)
    return _summary(index, resumed, removed, vocab, out_dir, labels)


def _summary(
    index: dict, resumed: int, removed: list[str], vocab: int, out_dir: Path, labels: bool
) -> dict:
    """What the dump prints: the index without the per-cut and per-shard tables, and bytes."""
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
    if labels:
        summary["pseudo_labels"] = _labels_report(out_dir, index)
    return summary


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
