"""A hand-made target store, written through the store's own writer without a teacher."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from asr_kd.distill.store import (
    CodecStats,
    ShardWriter,
    codec_name,
    encode_hidden,
    fit_codec,
    hidden_suffix,
    save_array,
    teacher_fingerprint,
    write_index,
)

K, DIM, LAYER, COMPRESS = 3, 6, 2, "int8"


class HandStore(NamedTuple):
    """``dir`` of a store holding ``cuts``: cut id -> (ids (T', K) int16, probs (T', K) float16,
    teacher layer LAYER (T', DIM) float32, stored coded by COMPRESS with ``params``)."""

    dir: object
    cuts: dict
    params: np.ndarray
    index: dict


def _cuts(lengths) -> dict:
    rng = np.random.default_rng(0)
    cuts = {}
    for i, frames in enumerate(lengths):
        ids = rng.permuted(np.tile(np.arange(10, dtype=np.int16), (frames, 1)), axis=1)[:, :K]
        probs = np.sort(rng.random((frames, K)), axis=1)[:, ::-1].astype(np.float16)
        hidden = (rng.normal(size=(frames, DIM)) * 2 + 1).astype(np.float32)
        cuts[f"cut-{i}"] = (ids, probs, hidden)
    return cuts


@pytest.fixture
def hand_store(tmp_path) -> HandStore:
    """Cuts of 4, 2, 7 and 3 frames in shards of at least 5 frames (so: 3 shards), with one
    stored teacher layer."""
    out = tmp_path / "hand"
    cuts = _cuts([4, 2, 7, 3])
    stats = CodecStats(DIM)
    stats.update(np.concatenate([hidden for _, _, hidden in cuts.values()]))
    params = fit_codec(COMPRESS, stats)
    codec_record = save_array(out / codec_name(LAYER, COMPRESS), params)
    fingerprint = teacher_fingerprint("0" * 64, "char:abc", 40.0, K, 2.0, [LAYER], COMPRESS)
    data = {"subset": "train", "cuts_sha256": "1" * 64, "data_dir": "DATA"}
    writer = ShardWriter(out, {"fingerprint": fingerprint, "data": data}, 0, shard_frames=5)
    for cut_id, (ids, probs, hidden) in cuts.items():
        coded = {hidden_suffix(LAYER): encode_hidden(COMPRESS, params, hidden)}
        writer.add(cut_id, ids, probs, coded)
    writer.flush()
    hidden = {
        "layers": [LAYER],
        "compress": COMPRESS,
        "dims": {str(LAYER): DIM},
        "codec_files": {codec_name(LAYER, COMPRESS): codec_record},
    }
    index = write_index(out, fingerprint, {"teacher_ckpt": "T.ckpt", "hidden": hidden})
    return HandStore(out, cuts, params, index)
