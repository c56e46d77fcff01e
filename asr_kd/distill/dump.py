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

One store may hold several subsets (``subset=train``, then ``subset=extra``, or
``subset=[train,extra]``): each shard records its data identity, the subset name and the SHA-256
of the decompressed ``cuts_<subset>.jsonl.gz``. Resuming a subset whose cuts file changed since
(a re-prepared data dir: other features under the same cut ids) is an error, as is resuming into
a store written before data identities were recorded; another subset appends. Cut ids must be
unique across the subsets of one store (the store is keyed by cut id).

A transformers teacher (``teacher_ckpt=hf:<dir|hub id>[@revision]``) reads each cut's audio
(:mod:`asr_kd.distill.hf_teacher`); its targets are stored in the student's vocabulary at
``student_frame_shift_ms`` (the frame conversion is in the fingerprint), with ``device=cuda``
and ``bf16=true`` on a GPU. Batches hold ``max_duration`` seconds of audio; each batch's
targets go to the shard writer at once, so memory holds one batch and one shard, never a
subset. The throughput (audio seconds per second) is on the progress bar and in the summary.

Usage:
    asr-kd-dump-targets teacher_ckpt=exp/teacher/checkpoints/last.ckpt data.dir=DATA \\
        subset=train out_dir=exp/targets k=8 temperature=2.0
    asr-kd-dump-targets ... subset=[train,extra]    # two subsets, one store
    asr-kd-dump-targets out_dir=exp/targets verify=true   # check every checksum, dump nothing
    asr-kd-dump-targets teacher_ckpt=hf:facebook/wav2vec2-conformer-rope-large-960h-ft \\
        data.dir=DATA subset=train out_dir=exp/targets_hf device=cuda bf16=true

    summary = dump_targets(compose("dump_targets", [...overrides]))
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from asr_kd.checkpoint import file_sha256
from asr_kd.config import as_list, save_config
from asr_kd.data.datamodule import build_datamodule
from asr_kd.data.features import FRAME_SHIFT_MS
from asr_kd.data.layout import DataDir
from asr_kd.data.teacher_vocab import is_hf_source
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.distill.hf_teacher import HFTeacher, hf_fingerprint
from asr_kd.distill.losses import soften_teacher
from asr_kd.distill.store import (
    MAX_INT16_VOCAB,
    ShardWriter,
    SoftTargetStore,
    check_fingerprint,
    committed_shards,
    remove_shard,
    shard_markers,
    shard_problems,
    shard_stem,
    teacher_fingerprint,
    write_index,
)
from asr_kd.errors import BadFileError, ConfigError
from asr_kd.models.hf import load_hf
from asr_kd.models.loading import load_model, resolve_device

__all__ = ["dump_targets"]

log = logging.getLogger(__name__)


def _own_teacher_targets(model, device, k: int, temperature: float):
    """``(batch) -> (ids, probs, lens)`` of an asr_kd teacher on ``device``, from the fbank."""

    def soft_targets(batch: dict):
        log_probs, out_lens = model(batch["feats"].to(device), batch["feat_lens"].to(device))
        ids, probs = soften_teacher(log_probs, temperature, k)
        return ids, probs, out_lens

    return soft_targets


def _teacher_batches(soft_targets, batches: Iterable[dict], done: set[str]):
    """Per batch, yield (cuts in the batch, seconds of audio run, [(cut_id, ids (T', k) int16,
    probs (T', k) fp16)]) for the cuts not in ``done``; a batch whose cuts are all done is not
    run. ``soft_targets(batch) -> (ids, probs, lens)``."""
    for batch in batches:
        todo = [i for i, cut_id in enumerate(batch["cut_ids"]) if cut_id not in done]
        if not todo:
            yield len(batch["cut_ids"]), 0.0, []
            continue
        with torch.inference_mode():
            ids, probs, out_lens = soft_targets(batch)[:3]
        ids = ids.to(torch.int16).cpu().numpy()
        probs = probs.to(torch.float16).cpu().numpy()
        lens = out_lens.cpu().tolist()
        records = [(batch["cut_ids"][i], ids[i, : lens[i]], probs[i, : lens[i]]) for i in todo]
        seconds = float(batch["feat_lens"].sum()) * FRAME_SHIFT_MS / 1000.0
        yield len(batch["cut_ids"]), seconds, records


def _data_identity(data_dir: Path, subset: str) -> tuple[dict, int]:
    """``({"subset", "cuts_sha256", "data_dir"}, number of cuts)`` of ``cuts_<subset>.jsonl.gz``.

    The hash is of the decompressed JSON lines: a gzip header carries a timestamp, so hashing the
    file itself would make a byte-identical re-prepare look like new data.
    """
    digest, num_cuts = hashlib.sha256(), 0
    with gzip.open(DataDir(data_dir).prepared_cuts(subset), "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            num_cuts += block.count(b"\n")  # one cut per line
    identity = {"subset": subset, "cuts_sha256": digest.hexdigest(), "data_dir": str(data_dir)}
    return identity, num_cuts


def _resume_state(
    out_dir: Path, fingerprint: dict, data: dict
) -> tuple[int, set[str], dict[str, str]]:
    """(next shard number, cuts of ``data["subset"]`` already committed, cut id -> subset of the
    other subsets' cuts) after checking the committed shards: another teacher, unknown data (a
    store written before data identities) or other cuts under this subset's name are errors."""
    committed = committed_shards(out_dir)
    done: set[str] = set()
    taken: dict[str, str] = {}
    redo = f"delete {out_dir} to dump again, or use another out_dir"
    for shard, meta in committed.items():
        where = out_dir / f"shard_{shard:05d}.json"
        check_fingerprint(meta["fingerprint"], fingerprint, str(where))
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


def _drop_damaged_shards(out_dir: Path, subsets: set[str]) -> list[str]:
    """Remove the committed shards of ``subsets`` whose arrays fail their size or SHA-256 (or, from
    before those were recorded, do not load); return their names. Their cuts are dumped again."""
    dropped = []
    for shard, meta in committed_shards(out_dir).items():
        if (meta.get("data") or {}).get("subset") not in subsets:
            continue  # another subset's shards are checked when that subset is resumed
        damage = shard_problems(out_dir, shard, meta, checksum=True)
        if damage:
            log.warning(
                "%s: %s is damaged (%s): removed, its cuts are dumped again",
                out_dir,
                shard_stem(shard),
                ", ".join(d.text for d in damage),
            )
            remove_shard(out_dir, shard)
            dropped.append(shard_stem(shard))
    return dropped


def _dump_subset(
    cfg: DictConfig, dm, teacher, fingerprint: dict, data: dict, total: int | None
) -> tuple[int, dict]:
    """Append the soft targets of subset ``data["subset"]`` (``data``, ``total``: from
    ``_data_identity``) to the store in ``cfg.out_dir``; return the cuts resumed and the
    throughput (``{"audio_s", "seconds", "audio_s_per_s"}`` of the batches run)."""
    out_dir, subset = Path(cfg.out_dir), data["subset"]
    batches = dm.dataloader(
        subset, shuffle=False, max_duration=cfg.max_duration, with_audio=teacher.needs_audio
    )
    first_shard, done, taken = _resume_state(out_dir, fingerprint, data)
    header = {"fingerprint": fingerprint, "data": data}
    writer = ShardWriter(out_dir, header, first_shard, cfg.shard_frames)
    audio_s, start = 0.0, time.perf_counter()
    with tqdm(total=total, unit="cut", desc=f"dump {subset}") as progress:
        for num_cuts, seconds, records in _teacher_batches(teacher.targets, batches, done):
            audio_s += seconds
            for cut_id, ids, probs in records:
                if cut_id in taken:
                    raise ConfigError(
                        f"cut {cut_id!r} of subset {subset!r} already has soft targets from "
                        f"subset {taken[cut_id]!r} in {out_dir}; expected cut ids unique across "
                        "the subsets of one store"
                    )
                writer.add(cut_id, ids, probs)
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
    return len(done), speed


def _subset_names(subset: str | Sequence[str]) -> list[str]:
    """``subset=train`` or ``subset=[train,extra]`` -> the names, in order, without repeats."""
    names = [str(s) for s in as_list(subset)]
    if not names:
        raise ConfigError("subset=[] names no subset to dump; expected a name or a list of names")
    return names


def dump_targets(cfg: DictConfig) -> dict:
    """Dump the teacher's soft targets for ``cfg.subset`` (a name or a list) into ``cfg.out_dir``;
    return the summary of the whole store."""
    out_dir = Path(cfg.out_dir)
    if cfg.get("verify", False):
        return SoftTargetStore(out_dir).verify()
    save_config(cfg, out_dir)
    device = resolve_device(cfg.device)
    teacher = _teacher(cfg, device)
    fingerprint, vocab = teacher.fingerprint, teacher.tokenizer.vocab_size
    dm = build_datamodule(cfg.data)
    if dm.tokenizer.fingerprint != teacher.tokenizer.fingerprint:
        fix = f"; prepare it with tokenizer=from_teacher tokenizer.teacher={cfg.teacher_ckpt}"
        raise ConfigError(
            f"tokenizer of {cfg.data.dir} ({dm.tokenizer.fingerprint}, vocab "
            f"{dm.tokenizer.vocab_size}) != teacher's ({teacher.tokenizer.fingerprint}, vocab "
            f"{vocab}) in {cfg.teacher_ckpt}" + (fix if is_hf_source(cfg.teacher_ckpt) else "")
        )
    # Every subset's identity first: a missing or re-prepared one fails now, not after hours.
    identities = [_data_identity(Path(cfg.data.dir), s) for s in _subset_names(cfg.subset)]
    removed = _drop_unreadable_markers(out_dir) if out_dir.is_dir() else []
    for data, _ in identities:
        _resume_state(out_dir, fingerprint, data)
    removed += _drop_damaged_shards(out_dir, {data["subset"] for data, _ in identities})
    resumed, throughput = 0, {}
    for data, total in identities:
        subset = data["subset"]
        cuts_resumed, throughput[subset] = _dump_subset(cfg, dm, teacher, fingerprint, data, total)
        resumed += cuts_resumed
        # "subset"/"data_dir" name the latest dump (as before); "subsets" lists every one
        extra = {"subset": subset, "data_dir": str(cfg.data.dir), "vocab_size": vocab}
        extra["teacher_ckpt"] = str(cfg.teacher_ckpt)  # for the repair command of a damaged store
        index = write_index(out_dir, fingerprint, extra)
    summary = {k_: v for k_, v in index.items() if k_ not in ("cuts", "shards")}
    summary["num_shards"] = len(index["shards"])
    summary["resumed_cuts"] = resumed
    summary["removed_shards"] = removed  # damaged: their cuts were dumped again
    summary["fp32_bytes_per_frame"] = 4 * vocab
    summary["throughput"] = throughput  # this run's batches (device, load: see the log)
    return summary


class _Teacher(NamedTuple):
    targets: Callable[[dict], tuple]  # (batch) -> (ids, probs, lens, ...)
    needs_audio: bool  # batches must carry audio (a transformers teacher)
    fingerprint: dict
    tokenizer: Tokenizer  # the student's (teacher's) tokenizer


def _teacher(cfg: DictConfig, device) -> _Teacher:
    """The soft-target source of ``cfg.teacher_ckpt``: an asr_kd checkpoint, or ``hf:...``
    (converted to ``cfg.student_frame_shift_ms``, bf16 autocast with ``cfg.bf16``)."""
    source = str(cfg.teacher_ckpt)
    if is_hf_source(source):
        loaded = load_hf(source, device, bf16=bool(cfg.get("bf16", False)))
        shift = float(cfg.get("student_frame_shift_ms", 40.0))
        k = min(int(cfg.k), loaded.tokenizer.vocab_size)
        subsampling = round(shift / FRAME_SHIFT_MS)
        teacher = HFTeacher(loaded, subsampling, shift, float(cfg.temperature), k)
        fingerprint = hf_fingerprint(loaded, teacher.conversion, k, float(cfg.temperature))
        return _Teacher(teacher, True, fingerprint, loaded.tokenizer)
    if cfg.get("bf16", False):
        raise ConfigError(
            "bf16=true is for a transformers teacher (hf:...); an asr_kd teacher runs in float32"
        )
    loaded = load_model(source)
    vocab = loaded.tokenizer.vocab_size
    if vocab > MAX_INT16_VOCAB:
        raise ConfigError(f"vocab {vocab} does not fit int16 ids (max {MAX_INT16_VOCAB})")
    k = min(int(cfg.k), vocab)
    fingerprint = teacher_fingerprint(
        file_sha256(source), loaded.tokenizer.fingerprint, loaded.model.frame_shift_ms, k,
        float(cfg.temperature),
    )  # fmt: skip
    model = loaded.model.to(device)
    targets = _own_teacher_targets(model, device, k, float(cfg.temperature))
    return _Teacher(targets, False, fingerprint, loaded.tokenizer)
