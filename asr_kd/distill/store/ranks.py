"""A dump split over N processes (ranks): which rank dumps a cut, which shard numbers it writes,
and when the index is merged.

- A cut belongs to rank ``crc32(cut_id) % world_size``: stable across runs, machines and Python
  processes (``hash()`` is salted per process), and independent of the cuts' order, so a rank
  restarted alone dumps the same cuts as before.
- Rank ``r`` of ``world_size`` writes the shard numbers ``n`` with ``n % world_size == r``,
  starting above every shard committed when it starts: ranks running side by side never take
  the same number, and none reuses a number a finished earlier run committed (any world size).
  With one rank this is the single-process numbering 0, 1, 2, ...
- ``index.json`` is merged from the committed shards once every cut of the dumped subsets is in
  one (:func:`missing_cuts`): by whichever rank finishes last, or by ``merge=true``.

Ranks come from the config (``world_size``, ``rank``) or, left null, from torchrun's (and
``torch.distributed``'s) ``WORLD_SIZE``/``RANK`` environment variables.

Usage:
    rank = DumpRank.resolve(cfg.get("world_size"), cfg.get("rank"))   # DumpRank(rank=0, world_size=1)
    rank.owns("1089-134686-0000")                                    # this rank dumps that cut
    first = rank.first_shard(committed_shards(out_dir))              # then every world_size-th
    missing_cuts(committed_shards(out_dir), {"train": 1200})         # {"train": 0}: merge now
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from asr_kd.errors import ConfigError

__all__ = ["DumpRank", "missing_cuts", "rank_of"]


def rank_of(cut_id: str, world_size: int) -> int:
    """The rank (0 .. world_size - 1) that dumps ``cut_id``.

    >>> rank_of("1089-134686-0000", 1), rank_of("1089-134686-0000", 2), rank_of("a", 4)
    (0, 0, 3)
    """
    return zlib.crc32(cut_id.encode()) % world_size


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment {name}={value!r}, expected an integer") from None


@dataclass(frozen=True)
class DumpRank:
    """This process's place in a split dump: ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def resolve(cls, world_size: int | None, rank: int | None) -> DumpRank:
        """From the config's ``world_size`` and ``rank``; each left None comes from the
        ``WORLD_SIZE`` / ``RANK`` environment (torchrun), else 1 / 0. ``ConfigError`` unless
        0 <= rank < world_size."""
        size = world_size if world_size is not None else _env_int("WORLD_SIZE")
        index = rank if rank is not None else _env_int("RANK")
        size, index = int(1 if size is None else size), int(0 if index is None else index)
        if size < 1 or not 0 <= index < size:
            raise ConfigError(
                f"rank={index} of world_size={size}, expected world_size >= 1 and "
                "0 <= rank < world_size (one process per rank: rank=0 ... rank=world_size-1)"
            )
        return cls(index, size)

    @property
    def split(self) -> bool:
        """Whether the cuts are split (more than one rank)."""
        return self.world_size > 1

    def owns(self, cut_id: str) -> bool:
        """Whether this rank dumps ``cut_id`` (:func:`rank_of`)."""
        return rank_of(cut_id, self.world_size) == self.rank

    def first_shard(self, committed: Iterable[int]) -> int:
        """The first shard number this rank writes: above every ``committed`` one, and equal to
        ``rank`` modulo ``world_size`` (it then writes every ``world_size``-th number).

        >>> DumpRank(0, 1).first_shard([]), DumpRank(0, 1).first_shard([0, 1, 2])
        (0, 3)
        >>> DumpRank(1, 2).first_shard([0, 2]), DumpRank(0, 2).first_shard([0, 1, 3])
        (3, 4)
        """
        start = max(committed, default=-1) + 1
        return start + (self.rank - start) % self.world_size

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def missing_cuts(committed: Mapping[int, dict], num_cuts: Mapping[str, int]) -> dict[str, int]:
    """Per subset of ``num_cuts`` (name -> cuts in its manifest), how many of its cuts no
    committed shard (``committed``: shard number -> its ``.json``) holds yet.

    >>> shards = {0: {"data": {"subset": "train"}, "cuts": {"a": [0, 5], "b": [5, 3]}}}
    >>> missing_cuts(shards, {"train": 3, "dev": 2})
    {'train': 1, 'dev': 2}
    """
    stored: dict[str, set[str]] = {name: set() for name in num_cuts}
    for meta in committed.values():
        subset = (meta.get("data") or {}).get("subset")
        if subset in stored:
            stored[subset].update(meta["cuts"])
    return {name: num_cuts[name] - len(stored[name]) for name in num_cuts}
