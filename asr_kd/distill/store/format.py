"""The target store's format: the layout of its directory, its file names, the teacher
fingerprint and the data identity it records.

Per cut and per output frame, the store holds the ``k`` most probable token ids (int16) and
their probabilities (fp16) at the dump's temperature (raw, not renormalised: the loss
renormalises, and the residual mass stays available for an "other" bucket). Frames of
consecutive cuts are concatenated into shards:

    <out_dir>/shard_00000.ids.npy       (N, k) int16     N = frames in the shard
    <out_dir>/shard_00000.probs.npy     (N, k) float16
    <out_dir>/shard_00000.hidden<L>.npy (N, C) teacher layer L coded by ``hidden_compress``
                                        (only with ``hidden_layers``; :mod:`.codecs`)
    <out_dir>/shard_00000.labels.jsonl  only with pseudo_labels=true: the teacher's transcript of
                                        each cut of the shard (asr_kd/distill/pseudo.py)
    <out_dir>/shard_00000.json          the commit marker: {"fingerprint": {...}, "data":
                                        {"subset", "cuts_sha256", "data_dir"}, "files": {name:
                                        {"bytes", "sha256"}}, "cuts": {cut_id: [offset,
                                        num_frames]}, "pseudo_labels": {"decoder", "confidence"}
                                        (with labels), "codec_sha256" (with hidden layers)}
    <out_dir>/hidden_codec<L>.<compress>.npy   layer L's codec parameters (float32)
    <out_dir>/index.json                {"fingerprint": {...}, "teacher_ckpt", "subsets": {name:
                                        {"cuts_sha256", "data_dir", "num_cuts", "num_frames"}},
                                        "shards": {"shard_00000": {"subset", "files": {name:
                                        {"bytes", "sha256"}}}}, "cuts": {cut_id: [shard, offset,
                                        frames]}, "pseudo_labels": {"confidence", "num_cuts"}
                                        (when shards hold labels), "hidden": {"layers",
                                        "compress", "dims", "codec_files", ...} (with hidden
                                        layers), "subset", "data_dir", "vocab_size", "num_cuts",
                                        "num_frames", "bytes_per_frame"}
    <out_dir>/config.yaml               the dump's resolved config

Storage: ``k * (2 + 2)`` bytes per frame, 32 B at k = 8, against ``V * 4`` B for full fp32
posteriors (char V = 29: 116 B, 3.6x; BPE-500: 2000 B, 62.5x).

Every file size and SHA-256 is recorded as it is written (:mod:`.writer`), so a store can be
checked without being trusted (:mod:`.integrity`). The teacher fingerprint (checkpoint SHA-256,
tokenizer fingerprint, frame shift, k, temperature, stored layers and their codec) is stored
with every shard and in the index; loading targets made by another teacher is an error.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asr_kd.data.layout import DataDir
from asr_kd.errors import ConfigError

__all__ = [
    "ARRAY_SUFFIXES",
    "INDEX_NAME",
    "LABELS_SUFFIX",
    "MARKER_GLOB",
    "MARKER_SUFFIX",
    "MAX_INT16_VOCAB",
    "check_int16_vocab",
    "bytes_per_frame",
    "check_fingerprint",
    "codec_name",
    "data_identity",
    "hidden_suffix",
    "parse_json",
    "read_json",
    "shard_number",
    "shard_stem",
    "teacher_fingerprint",
]

INDEX_NAME = "index.json"
MAX_INT16_VOCAB = np.iinfo(np.int16).max + 1
ARRAY_SUFFIXES = (".ids.npy", ".probs.npy")  # (N, k) int16 ids, (N, k) float16 probabilities
LABELS_SUFFIX = ".labels.jsonl"  # pseudo-labels, one JSON line per cut (asr_kd/distill/pseudo.py)


def check_int16_vocab(vocab: int) -> None:
    """``ConfigError`` unless a teacher's ``vocab`` ids fit the store's int16 id arrays."""
    if vocab > MAX_INT16_VOCAB:
        raise ConfigError(f"vocab {vocab} does not fit int16 ids (max {MAX_INT16_VOCAB})")


MARKER_SUFFIX = ".json"  # a shard's commit marker
_SHARD_PREFIX = "shard_"
MARKER_GLOB = f"{_SHARD_PREFIX}*{MARKER_SUFFIX}"  # every shard's commit marker


def bytes_per_frame(k: int) -> int:
    """Bytes stored per output frame: k int16 ids + k fp16 probabilities.

    >>> bytes_per_frame(8), 29 * 4, 500 * 4   # vs fp32 posteriors, char and BPE-500
    (32, 116, 2000)
    """
    return k * (np.dtype(np.int16).itemsize + np.dtype(np.float16).itemsize)


def shard_stem(shard: int) -> str:
    """The file-name stem of shard number ``shard`` (``.ids.npy``, ``.probs.npy``, ``.json``).

    >>> shard_stem(3)
    'shard_00003'
    """
    return f"{_SHARD_PREFIX}{shard:05d}"


def shard_number(marker: Path) -> int:
    """The shard number of a commit marker's path.

    >>> shard_number(Path("exp/targets/shard_00003.json"))
    3
    """
    return int(marker.name[len(_SHARD_PREFIX) : -len(MARKER_SUFFIX)])


def hidden_suffix(layer: int) -> str:
    """The file suffix of teacher layer ``layer``'s array in a shard.

    >>> hidden_suffix(4)
    '.hidden4.npy'
    """
    return f".hidden{int(layer)}.npy"


def codec_name(layer: int, compress: str) -> str:
    """The file (in the store's directory) holding layer ``layer``'s ``compress`` parameters
    (named by the codec too: a dump restarted with another codec never reads the old one).

    >>> codec_name(4, "pca16")
    'hidden_codec4.pca16.npy'
    """
    return f"hidden_codec{int(layer)}.{compress}.npy"


def teacher_fingerprint(
    checkpoint_sha256: str,
    tokenizer_fingerprint: str,
    frame_shift_ms: float,
    k: int,
    temperature: float,
    hidden_layers: Sequence[int] = (),
    hidden_compress: str = "none",
    extra: dict | None = None,
) -> dict:
    """The identity of a set of soft targets: which teacher, which tokens, which frames, which
    k/T, and (only when some are stored) which teacher layers under which compression.

    ``extra``: more fields (a transformers teacher: its id or path, revision, frame
    conversion); an asr_kd teacher has none."""
    fingerprint = {
        "checkpoint_sha256": str(checkpoint_sha256),
        "tokenizer": str(tokenizer_fingerprint),
        "frame_shift_ms": float(frame_shift_ms),
        "k": int(k),
        "temperature": float(temperature),
        **(extra or {}),
    }
    if hidden_layers:
        fingerprint["hidden_layers"] = [int(x) for x in hidden_layers]
        fingerprint["hidden_compress"] = str(hidden_compress)
    return fingerprint


def check_fingerprint(found: dict, expected: dict, where: str) -> None:
    """Raise ``ConfigError`` (a ``ValueError``) naming every differing field with both values."""
    diffs = [
        f"{key}: {found.get(key)!r} (targets) != {expected.get(key)!r} (configured teacher)"
        for key in sorted(set(found) | set(expected))
        if found.get(key) != expected.get(key)
    ]
    if diffs:
        raise ConfigError(
            f"soft targets in {where} were made by another teacher: " + "; ".join(diffs)
        )


def data_identity(data_dir: Path, subset: str) -> tuple[dict, int]:
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


def parse_json(raw: bytes) -> dict | None:
    """A JSON object from ``raw``; None when it is not JSON or not an object (a file cut short).

    >>> parse_json(b'{"cuts": {}}'), parse_json(b'{"cuts": {'), parse_json(b"[]")
    ({'cuts': {}}, None, None)
    """
    try:
        obj = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return obj if isinstance(obj, dict) else None


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None when it is absent, unreadable or not an object."""
    try:
        return parse_json(path.read_bytes())
    except OSError:
        return None
