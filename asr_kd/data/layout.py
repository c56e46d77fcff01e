"""The layout of a prepared data directory: every path under it comes from :class:`DataDir`.

``asr-kd-prepare`` writes, and the data module, the target dump and evaluate read (docs/internals.md):

    DATA/cuts_<subset>.jsonl.gz          lhotse CutSet with features (one subset = one such file)
    DATA/recordings_<subset>.jsonl.gz    DATA/supervisions_<subset>.jsonl.gz
    DATA/feats/<subset>/                 fbank storage of the subset's cuts
    DATA/shuffled/cuts_<a>+<b>_seed<n>.jsonl.gz
                                         the cuts of training subsets a, b in one random order
                                         (written by the data module, :mod:`asr_kd.data.shuffle`)
    DATA/lang/                           the tokenizer (Tokenizer.save / Tokenizer.load)
    DATA/cmvn.json                       mean/std per fbank bin over the train subsets
    DATA/prepare_report.json             counts and skips per subset (read by
                                         :func:`asr_kd.data.prepare.prepare_skips`)
    DATA/prepared_<subset>.json          the subset is finished (a rerun of prepare keeps it)
    DATA/config.yaml                     the resolved prepare config (asr_kd.config.save_config)

Usage:
    data = DataDir("DATA")               # names only; nothing is checked
    data = DataDir.existing("DATA")      # MissingFileError when DATA is not a directory
    data.cuts("train"); data.feats("train"); data.lang; data.cmvn; data.report
    data.shuffled_cuts(["train-clean-100", "train-clean-360"], seed=0)
    data.subset_done("train")            # prepared_train.json
    data.num_cuts("train")               # lines of the cuts file
    data.subsets()                       # ['dev', 'test', 'train']: subsets with a cuts file
    data.prepared_cuts("test")           # the cuts file, or MissingFileError naming the others
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

from asr_kd.errors import MissingFileError

__all__ = ["DataDir"]

_MANIFEST = "{kind}_{subset}.jsonl.gz"  # lhotse manifests, one JSON line per item


class DataDir:
    """The paths of one data directory written by ``asr-kd-prepare`` (``data.dir`` in configs)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def existing(cls, root: str | Path) -> DataDir:
        """``DataDir(root)``; :class:`MissingFileError` when ``root`` is not a directory."""
        if not Path(root).is_dir():
            raise MissingFileError(
                f"data dir {root} does not exist: run asr-kd-prepare out_dir={root} first, "
                "or point data.dir at a prepared data dir"
            )
        return cls(root)

    def __repr__(self) -> str:
        return f"DataDir({str(self.root)!r})"

    def _manifest(self, kind: str, subset: str) -> Path:
        return self.root / _MANIFEST.format(kind=kind, subset=subset)

    def cuts(self, subset: str) -> Path:
        """``cuts_<subset>.jsonl.gz``: the subset's lhotse cuts (one JSON line per cut)."""
        return self._manifest("cuts", subset)

    def num_cuts(self, subset: str) -> int:
        """Cuts in :meth:`cuts` (counted by line, nothing parsed)."""
        with gzip.open(self.cuts(subset), "rb") as f:
            return sum(1 for _ in f)

    def recordings(self, subset: str) -> Path:
        return self._manifest("recordings", subset)

    def supervisions(self, subset: str) -> Path:
        return self._manifest("supervisions", subset)

    def subset_done(self, subset: str) -> Path:
        """``prepared_<subset>.json``: written last when prepare finished ``subset`` (its counts,
        skips and CMVN sums); a rerun keeps a subset that has one (delete it to redo the subset)."""
        return self.root / f"prepared_{subset}.json"

    def feats(self, subset: str) -> Path:
        """``feats/<subset>/``: where prepare stores the subset's fbank features."""
        return self.root / "feats" / subset

    def relocated_features(self, storage_path: str | Path) -> Path:
        """Where a feature file written into another data dir's ``feats/<subset>/`` lies in this
        one (the data dir was moved or copied after prepare)."""
        path = Path(storage_path)
        return self.feats(path.parent.name) / path.name

    def shuffled_cuts(self, subsets: Sequence[str], seed: int) -> Path:
        """``shuffled/cuts_<a>+<b>_seed<seed>.jsonl.gz``: the cuts of ``subsets`` in one random
        order fixed by ``seed``. In a folder of its own, so :meth:`subsets` never lists it."""
        name = _MANIFEST.format(kind="cuts", subset=f"{'+'.join(subsets)}_seed{seed}")
        return self.root / "shuffled" / name

    @property
    def lang(self) -> Path:
        """``lang/``: the tokenizer's directory (``Tokenizer.load(data.lang)``)."""
        return self.root / "lang"

    @property
    def cmvn(self) -> Path:
        """``cmvn.json``: ``{"mean": [80], "std": [80], "num_frames": n}``."""
        return self.root / "cmvn.json"

    @property
    def report(self) -> Path:
        """``prepare_report.json``: what prepare kept and dropped, per subset."""
        return self.root / "prepare_report.json"

    def subsets(self) -> list[str]:
        """The prepared subsets (those with a cuts file), sorted."""
        head, _, tail = self.cuts("*").name.partition("*")
        names = (p.name for p in self.root.glob(head + "*" + tail))
        return sorted(n[len(head) : len(n) - len(tail)] for n in names)

    def prepared_cuts(self, subset: str) -> Path:
        """:meth:`cuts` of a prepared ``subset``; :class:`MissingFileError` listing the prepared
        ones when it is not."""
        path = self.cuts(subset)
        if not path.is_file():
            raise MissingFileError(
                f"no prepared subset {subset!r}: {path} missing (found {self.subsets()}); "
                f"prepare it (asr-kd-prepare subsets=[...,{subset}]) or pick one of those"
            )
        return path
