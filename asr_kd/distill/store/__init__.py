"""The target store: the teacher's top-k posteriors per output frame (and, for hidden-state
distillation, its coded layers), sharded, fingerprinted, checked.

- :mod:`.format`: the directory's layout, file names, the teacher fingerprint, the data identity;
- :mod:`.writer`: shards committed one at a time (``.json`` last), then ``index.json``;
- :mod:`.reader`: :class:`SoftTargetStore`, checked on open;
- :mod:`.integrity`: cheap (sizes) and full (SHA-256) checks, and the command that repairs;
- :mod:`.codecs`: the codecs of stored teacher layers (``none``, ``int8``, ``pca<N>``);
- :mod:`.ranks`: a dump split over N processes: which rank dumps a cut, its shard numbers, when
  the index is merged.

Written by :mod:`asr_kd.distill.dump`; read by :mod:`asr_kd.distill.teachers` (cached targets)
and :mod:`asr_kd.distill.pseudo` (pseudo-labels). The names those use are re-exported here.
"""

from asr_kd.distill.store.codecs import (
    CodecStats,
    codec_bytes_per_frame,
    encode_hidden,
    fit_codec,
    parse_compress,
)
from asr_kd.distill.store.format import (
    INDEX_NAME,
    LABELS_SUFFIX,
    MAX_INT16_VOCAB,
    bytes_per_frame,
    check_fingerprint,
    check_int16_vocab,
    codec_name,
    data_identity,
    hidden_suffix,
    shard_stem,
    teacher_fingerprint,
)
from asr_kd.distill.store.integrity import redump_hint, shard_problems, validate
from asr_kd.distill.store.ranks import DumpRank, missing_cuts, rank_of
from asr_kd.distill.store.reader import SoftTargetStore, StoredBatch
from asr_kd.distill.store.writer import (
    ShardWriter,
    committed_shards,
    file_record,
    remove_shard,
    save_array,
    save_array_once,
    shard_markers,
    write_index,
)

__all__ = [
    "INDEX_NAME",
    "LABELS_SUFFIX",
    "MAX_INT16_VOCAB",
    "check_int16_vocab",
    "CodecStats",
    "DumpRank",
    "ShardWriter",
    "SoftTargetStore",
    "StoredBatch",
    "bytes_per_frame",
    "check_fingerprint",
    "codec_bytes_per_frame",
    "codec_name",
    "committed_shards",
    "data_identity",
    "encode_hidden",
    "file_record",
    "fit_codec",
    "hidden_suffix",
    "missing_cuts",
    "parse_compress",
    "rank_of",
    "redump_hint",
    "remove_shard",
    "save_array",
    "save_array_once",
    "shard_markers",
    "shard_problems",
    "shard_stem",
    "teacher_fingerprint",
    "validate",
    "write_index",
]
