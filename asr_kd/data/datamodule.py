"""Batches of precomputed fbank features and token ids from a prepared data directory.

``AsrDataModule`` reads the cuts of a prepared data dir (:class:`asr_kd.data.layout.DataDir`) and
serves duration-bucketed dynamic batches (lhotse ``DynamicBucketingSampler``: at most
``max_duration`` seconds of audio per batch), sharded by the ``torch.distributed`` rank when a
process group is initialised (so Lightning runs with ``use_distributed_sampler=False``).

Several training subsets (LibriSpeech's train-clean-100, -360, other-500) are read from one
manifest of all their cuts in a random order (``global_shuffle``; :mod:`asr_kd.data.shuffle`),
written into the data dir by :meth:`AsrDataModule.prepare_data` (Lightning runs it once per node)
or on first use, and read lazily: a rank holds the sampler's buffer of cuts, not the corpus. A
single training subset is read as prepared, in its own order.

Each batch is a dict (B utterances, T frames, U tokens):

    feats       (B, T, 80) float32  raw fbank (no CMVN: the model owns it), zero-padded
    feat_lens   (B,)       int64
    tokens      (B, U)     int64    token ids, padded with 0 (the blank)
    token_lens  (B,)       int64    0 for a cut without a transcript
    texts       list[str]           normalised reference text ("" if none)
    cut_ids     list[str]
    audio       (B, N)     float32  16 kHz waveform, zero-padded   } only with ``with_audio``:
    audio_lens  (B,)       int64    valid samples                  } for a transformers teacher

``with_audio`` is for a teacher that reads audio through its own feature extractor (``hf:...``,
:mod:`asr_kd.distill.hf_teacher`); the student still gets the fbank of the same cut.

Validation runs on one dev subset (``dev_subset="dev"``: one dataloader) or on each of several
(``dev_subset=[dev-clean,dev-other]``: one dataloader per subset, in that order; the task logs
each subset's WER and the combined one).

More fields per training batch (:attr:`AsrDataModule.train_batch_fields`): a callable
``fields(batch) -> dict`` run on each batch where it is built, in the loader's worker processes,
whose entries join the batch (cached soft targets: :class:`asr_kd.distill.teachers.CachedTargets`
looks them up there, beside the step rather than on its thread). It must be picklable.

Pseudo-labels (:meth:`AsrDataModule.use_pseudo_labels`): a training cut without a transcript
whose id has a pseudo transcript gets that text's ``tokens``/``token_lens`` (its ``texts`` entry
stays "": it is not a reference); a real transcript always wins.

Speed perturbation (``speed_perturb=True``, training only) changes a cut's audio with lhotse's
``perturb_speed`` and computes its fbank on the fly; such a cut's id gains a ``_sp0.9`` style
suffix, and a batch may then hold up to ``1 / min(speed_factors)`` times ``max_duration``.
Training subsets prepared with speed-perturbed copies (``asr-kd-prepare speed_perturb=[0.9,1.1]``,
:mod:`asr_kd.data.perturb`) need neither: their copies are cuts with precomputed features (and
soft targets, once dumped), read like the others, through the shuffled manifest (each copy lies
next to its original in the subset's file); ``speed_perturb=True`` on them is an error.

The training sampler's place in its epoch is part of every Lightning checkpoint (the
``state_dict``/``load_state_dict`` hooks; :class:`asr_kd.data.sampling.ResumableSampler` counts
the batches trained), so a run resumed mid-epoch goes on with the batch after the last one it
trained, with the shuffles of an uninterrupted run.

Usage:
    dm = AsrDataModule("DATA", max_duration=120.0, num_workers=1)
    dm.tokenizer.vocab_size; mean, std = dm.cmvn
    for batch in dm.train_dataloader(): ...
    sampler = dm.train_sampler()                      # the training batches' cuts, no loading
    for batch in dm.dataloader("test"): ...           # any prepared subset, fixed order
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from asr_kd.data.features import compute_fbank
from asr_kd.data.layout import DataDir
from asr_kd.data.perturb import prepared_speed_factors
from asr_kd.data.sampling import ResumableSampler
from asr_kd.data.shuffle import shuffled_cuts
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError, MissingFileError

__all__ = ["AsrDataModule", "AsrDataset", "build_datamodule", "cut_text", "load_cuts"]

# Sampler settings that must match for a checkpoint's place in the epoch to mean anything.
_SAMPLER_KEYS = ("max_duration", "seed", "world_size", "shuffle", "drop_last")


def _distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _relocate(cut, data: DataDir):
    from lhotse.utils import fastcopy

    path = data.relocated_features(cut.features.storage_path)
    features = fastcopy(cut.features, storage_path=str(path))
    return fastcopy(cut, features=features)


def _with_local_features(cuts, data: DataDir):
    """``cuts`` (lazy stays lazy) with feature paths under ``data`` if the data dir moved since
    prepare (the first cut's features are not where it says)."""
    first = next(iter(cuts), None)
    if first is None or not first.has_features or Path(first.features.storage_path).exists():
        return cuts
    return cuts.map(partial(_relocate, data=data))


def load_cuts(data_dir: str | Path, subset: str):
    """The lazy ``CutSet`` of one prepared subset; feature paths follow the data dir if it moved.

    ``MissingFileError`` (listing the prepared subsets) when ``subset`` was not prepared."""
    from lhotse import CutSet

    data = DataDir(data_dir)
    return _with_local_features(CutSet.from_file(data.prepared_cuts(subset)), data)


def cut_text(cut) -> str:
    """A prepared cut's transcript; "" for a cut without one (an untranscribed subset)."""
    return (cut.supervisions[0].text or "") if cut.supervisions else ""


class AsrDataset(Dataset):
    """Map-style dataset over lhotse ``CutSet`` mini-batches (given by the sampler) -> batch dict.

    Args:
        tokenizer: turns each cut's supervision text into ids.
        speed_factors: speed-perturbation factors; each cut picks one of ``(1.0, *factors)``
            uniformly. Empty: no perturbation.
        seed: makes the perturbation choice a function of (seed, cut ids).
        pseudo_texts: cut id -> transcript to train on for a cut that has none (pseudo-labels).
        with_audio: also ``audio`` (B, N) and ``audio_lens`` (B,), the cuts' 16 kHz samples.
        batch_fields: ``fields(batch) -> dict`` of more entries for each batch (run in the
            loader's worker processes); None: none.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        speed_factors: Sequence[float] = (),
        seed: int = 0,
        pseudo_texts: Mapping[str, str] | None = None,
        with_audio: bool = False,
        batch_fields: Callable[[dict], dict] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.batch_fields = batch_fields
        self.speed_factors = tuple(float(f) for f in speed_factors)
        self.seed = seed
        self.pseudo_texts = pseudo_texts or {}
        self.with_audio = with_audio

    def _perturb(self, cuts):
        from lhotse.utils import fastcopy

        if not self.speed_factors:
            return list(cuts)
        rng = random.Random(f"{self.seed}:{','.join(c.id for c in cuts)}")
        out = []
        for cut in cuts:
            factor = rng.choice((1.0, *self.speed_factors))
            if factor != 1.0:
                cut = fastcopy(cut, features=None).perturb_speed(factor)
            out.append(cut)
        return out

    def _feats(self, cut) -> torch.Tensor:
        if cut.has_features:
            return torch.from_numpy(cut.load_features()).float()
        return compute_fbank(cut.load_audio()[0], cut.sampling_rate)

    def __getitem__(self, cuts) -> dict:
        texts = [cut_text(c) for c in cuts]
        targets = [t or self.pseudo_texts.get(c.id, "") for c, t in zip(cuts, texts, strict=True)]
        cuts = self._perturb(cuts)  # looked up before: a perturbed cut's id has a suffix
        feats = [self._feats(c) for c in cuts]
        tokens = [torch.tensor(self.tokenizer.encode(t), dtype=torch.long) for t in targets]
        batch = {
            "feats": pad_sequence(feats, batch_first=True),
            "feat_lens": torch.tensor([f.shape[0] for f in feats], dtype=torch.long),
            "tokens": pad_sequence(tokens, batch_first=True, padding_value=0),
            "token_lens": torch.tensor([len(t) for t in tokens], dtype=torch.long),
            "texts": texts,
            "cut_ids": [c.id for c in cuts],
        }
        if self.with_audio:
            audio = [torch.from_numpy(c.load_audio()[0]).float() for c in cuts]
            batch["audio"] = pad_sequence(audio, batch_first=True)
            batch["audio_lens"] = torch.tensor([len(a) for a in audio], dtype=torch.long)
        if self.batch_fields is not None:
            batch.update(self.batch_fields(batch))
        return batch


class AsrDataModule(L.LightningDataModule):
    """Train/dev (and any other prepared subset) dataloaders over a prepared data directory.

    Args:
        dir: the data directory written by ``asr-kd-prepare`` (``data.dir=DATA`` in configs).
        train_subset: subset (or list of subsets) for training.
        dev_subset: subset for validation, or a list of subsets (each validated apart:
            ``dev_subsets``, one dataloader each).
        max_duration: seconds of audio per batch (before speed perturbation).
        num_buckets: duration buckets of the sampler (similar lengths batch together: less
            padding).
        num_workers: dataloader processes (0 = load in the main process).
        speed_perturb: training cuts get speed 0.9/1.0/1.1 (``speed_factors``), fbank on the fly.
        shuffle: shuffle training batches (each epoch differently, via the sampler's epoch).
        drop_last: drop the last, incomplete training batch.
        seed: sampler shuffling, the shuffled manifest's order and speed-perturbation choices.
        global_shuffle: train from one manifest of all the training subsets in a random order
            (:mod:`asr_kd.data.shuffle`, written into the data dir on first use), which the
            sampler's buffer then reshuffles each epoch. None: when ``shuffle`` and there is
            more than one training subset or one with prepared speed-perturbed copies (one
            plain subset keeps its own file order).
        buffer_size: cuts the bucketing sampler holds and shuffles among (lhotse's default):
            more mixes farther, at the memory of that many cuts per rank.
        with_audio: batches also carry the cuts' audio (a transformers teacher reads it); set
            by ``asr-kd-distill`` / ``asr-kd-dump-targets`` for an ``hf:`` teacher.
        pin_memory: batches in page-locked memory, so that their copy to a GPU runs beside the
            step (the CPU trains on them as they are).
    """

    def __init__(
        self,
        dir: str | Path,
        train_subset: str | Sequence[str] = "train",
        dev_subset: str | Sequence[str] = "dev",
        max_duration: float = 120.0,
        num_buckets: int = 8,
        num_workers: int = 1,
        speed_perturb: bool = False,
        speed_factors: Sequence[float] = (0.9, 1.1),
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        global_shuffle: bool | None = None,
        buffer_size: int = 20000,
        with_audio: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.layout = DataDir.existing(dir)
        self.data_dir = self.layout.root
        self.train_subsets = _subset_list("data.train_subset", train_subset)
        self.dev_subsets = _subset_list("data.dev_subset", dev_subset)
        self.max_duration = float(max_duration)
        self.num_buckets = num_buckets
        self.num_workers = num_workers
        self.speed_perturb = speed_perturb
        self.speed_factors = tuple(speed_factors)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.global_shuffle = global_shuffle
        self.buffer_size = int(buffer_size)
        self.with_audio = with_audio
        self.pin_memory = bool(pin_memory)
        # fields(batch) -> dict added to each training batch in the workers (see the module doc)
        self.train_batch_fields: Callable[[dict], dict] | None = None
        self.tokenizer = Tokenizer.load(self.layout.lang)
        # copies prepared by asr-kd-prepare speed_perturb=[...] (asr_kd.data.perturb)
        self._speed_copies = {s: prepared_speed_factors(self.layout, s) for s in self.train_subsets}
        self._check_speed_perturb()
        self._train_sampler: ResumableSampler | None = None
        self._train_sampler_state: dict | None = None  # from a checkpoint, until applied
        self._pseudo_texts: dict[str, str] = {}
        self._drop_untranscribed = False

    def _check_speed_perturb(self) -> None:
        """On-the-fly perturbation of cuts that are speed-perturbed copies already would stack
        the two (0.9 x 0.9 ...): refused, naming the subsets and their markers."""
        prepared = {s: f for s, f in self._speed_copies.items() if f}
        if self.speed_perturb and prepared:
            markers = ", ".join(str(self.layout.subset_done(s)) for s in prepared)
            raise ConfigError(
                f"data.speed_perturb=true, but the training subsets {list(prepared)} hold "
                f"speed-perturbed copies already ({markers}: speed_perturb="
                f"{list(next(iter(prepared.values())))}); set data.speed_perturb=false"
            )

    def use_pseudo_labels(self, texts: Mapping[str, str], drop_untranscribed: bool) -> None:
        """Train CTC on ``texts`` (cut id -> transcript) for training cuts without a transcript;
        with ``drop_untranscribed`` the training cuts that have neither are left out (a run
        without a KD term has nothing to teach them)."""
        self._pseudo_texts = dict(texts)
        self._drop_untranscribed = bool(drop_untranscribed)

    @property
    def cmvn(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean (80,), std (80,))`` float32 over the training frames, from ``cmvn.json``."""
        path = self.layout.cmvn
        if not path.is_file():
            raise MissingFileError(f"no CMVN statistics at {path}: run asr-kd-prepare")
        stats = json.loads(path.read_text())
        return (
            torch.tensor(stats["mean"], dtype=torch.float32),
            torch.tensor(stats["std"], dtype=torch.float32),
        )

    def _cuts(self, subsets: Sequence[str]) -> tuple:
        """``(cuts, number of cuts)``: lazy cuts of ``subsets`` (one line per cut on disk)."""
        from lhotse import CutSet

        cut_sets = [load_cuts(self.data_dir, s) for s in subsets]
        count = sum(self.layout.num_cuts(s) for s in subsets)
        if len(cut_sets) == 1:
            return cut_sets[0], count
        return CutSet.from_cuts(c for cs in cut_sets for c in cs), count

    def _sampler(self, cuts_and_count, shuffle, max_duration, drop_last):
        from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler

        cuts, count = cuts_and_count
        rank, world_size = _distributed_rank()
        common = dict(max_duration=max_duration, shuffle=shuffle, drop_last=drop_last)
        common.update(seed=self.seed, rank=rank, world_size=world_size)
        # lhotse asserts 1 < buckets <= cuts: tiny subsets get fewer buckets, and one bucket
        # (num_buckets=1, or a one-cut subset) is plain dynamic batching.
        buckets = min(self.num_buckets, count)
        if buckets < 2:
            return DynamicCutSampler(cuts, **common)
        return DynamicBucketingSampler(
            cuts, num_buckets=buckets, buffer_size=self.buffer_size, **common
        )

    def _loader(self, dataset, sampler) -> DataLoader:
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def _batch_settings(self, sampler, num_cuts: int) -> dict:
        """Everything that fixes the training batch sequence: a resume needs all of it unchanged."""
        settings = {k: getattr(sampler, k) for k in _SAMPLER_KEYS} | {
            "train_subsets": list(self.train_subsets),
            "num_cuts": int(num_cuts),
            "num_buckets": self.num_buckets,
            "speed_perturb": bool(self.speed_perturb),
        }
        if self._uses_shuffled_manifest():  # absent otherwise: older checkpoints still match
            path = self.layout.shuffled_cuts(self.train_subsets, self.seed)
            settings["shuffled_manifest"] = path.name
        return settings

    def _uses_shuffled_manifest(self) -> bool:
        if self.global_shuffle is None:
            # a prepared copy lies next to its original in the file: shuffle those apart too
            copies = any(self._speed_copies.values())
            return self.shuffle and (len(self.train_subsets) > 1 or copies)
        return bool(self.global_shuffle)

    def prepare_data(self) -> None:
        """Lightning's hook, run once per node before any rank reads data: writes the shuffled
        training manifest when training uses one and it is missing or stale."""
        if self._uses_shuffled_manifest():
            shuffled_cuts(self.layout, self.train_subsets, self.seed)

    def _train_cuts(self) -> tuple:
        """``(cuts, number of cuts)`` of the training subsets (lazy, from the shuffled manifest
        when it is used), less the untranscribed cuts without a pseudo-label when
        :meth:`use_pseudo_labels` drops them."""
        from lhotse import CutSet

        if self._uses_shuffled_manifest():
            path = shuffled_cuts(self.layout, self.train_subsets, self.seed)
            cuts = _with_local_features(CutSet.from_jsonl_lazy(path), self.layout)
            count = sum(self.layout.num_cuts(s) for s in self.train_subsets)
        else:
            cuts, count = self._cuts(self.train_subsets)
        if not self._drop_untranscribed:
            return cuts, count
        kept = cuts.filter(lambda c: bool(cut_text(c)) or c.id in self._pseudo_texts).to_eager()
        return kept, len(kept)

    def train_sampler(self) -> ResumableSampler:
        """The training sampler :meth:`train_dataloader` uses: lhotse's, wrapped to save its place,
        restored to a checkpoint's place when :meth:`load_state_dict` gave one."""
        cuts = self._train_cuts()
        lhotse_sampler = self._sampler(cuts, self.shuffle, self.max_duration, self.drop_last)
        sampler = ResumableSampler(lhotse_sampler, self._batch_settings(lhotse_sampler, cuts[1]))
        saved, self._train_sampler_state = self._train_sampler_state, None
        if saved is not None:
            sampler.load_state_dict(saved)  # fast-forwards to the saved place (or warns)
        elif self._train_sampler is None and self.trainer is not None and self.trainer.ckpt_path:
            warnings.warn(
                f"the checkpoint holds no sampler state ({self.trainer.ckpt_path}): this epoch "
                "restarts from its first batch",
                stacklevel=2,
            )
        self._train_sampler = sampler
        return sampler

    def train_dataloader(self) -> DataLoader:
        factors = self.speed_factors if self.speed_perturb else ()
        dataset = AsrDataset(
            self.tokenizer,
            speed_factors=factors,
            seed=self.seed,
            pseudo_texts=self._pseudo_texts,
            with_audio=self.with_audio,
            batch_fields=self.train_batch_fields,
        )
        return self._loader(dataset, self.train_sampler())

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Lightning's hook, called once per batch right before its step: counts the training
        batches for the sampler's saved place."""
        if self._train_sampler is not None and self.trainer is not None and self.trainer.training:
            self._train_sampler.batch_trained()
        return batch

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The dev subset's loader; with several dev subsets a list, one loader per subset."""
        loaders = [self.dataloader(subset) for subset in self.dev_subsets]
        return loaders[0] if len(loaders) == 1 else loaders

    def dataloader(
        self,
        subset: str,
        shuffle: bool = False,
        max_duration: float | None = None,
        with_audio: bool | None = None,
    ) -> DataLoader:
        """Batches of any prepared subset, without augmentation (evaluation, soft-target dumps).

        With ``shuffle=False`` the order is fixed (bucketed by duration), run after run.
        ``with_audio`` None: the module's setting.
        """
        audio = self.with_audio if with_audio is None else with_audio
        dataset = AsrDataset(self.tokenizer, with_audio=audio)
        duration = self.max_duration if max_duration is None else float(max_duration)
        return self._loader(dataset, self._sampler(self._cuts([subset]), shuffle, duration, False))

    def state_dict(self) -> dict:
        """``{"train_sampler": lhotse sampler state, "data": batch settings}`` for the checkpoint
        (:meth:`ResumableSampler.state_dict`: the place after the last *trained* batch, not the
        sampler's own, which runs ahead of training); ``{}`` before training."""
        return {} if self._train_sampler is None else self._train_sampler.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Keep the sampler state of a checkpoint for the next :meth:`train_dataloader`."""
        self._train_sampler_state = state_dict if state_dict.get("train_sampler") else None


def _subset_list(key: str, subsets: str | Sequence[str]) -> list[str]:
    """``subsets`` (a name or a list of names) as a list; ConfigError for an empty list."""
    names = [subsets] if isinstance(subsets, str) else [str(s) for s in subsets]
    if not names:
        raise ConfigError(f"{key}=[] names no subset; expected a subset name or a list of names")
    return names


def build_datamodule(data_cfg) -> AsrDataModule:
    """``conf/data/*.yaml`` (``_target_`` AsrDataModule) -> the data module."""
    import hydra.utils

    return hydra.utils.instantiate(data_cfg)
