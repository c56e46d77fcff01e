"""Speed-perturbed copies of training cuts, prepared once like any other cut (icefall's way).

On-the-fly speed perturbation (``data.speed_perturb``) gives a cut other frames, and lhotse
another id, each time it is drawn: soft targets dumped once cannot follow it. Instead,
``asr-kd-prepare speed_perturb=[0.9,1.1]`` writes, for every cut of a training subset, one copy
per factor: lhotse's ``cut.perturb_speed(factor)`` (id ``<id>_sp0.9``, the supervision scaled,
the audio resampled when loaded), stored with its own fbank in the subset's cuts file beside the
original. ``asr-kd-dump-targets`` then gives each copy its own soft targets, and every training
command reads the copies as plain cuts (three times the cuts per epoch with two factors, as
icefall's LibriSpeech recipe trains).

CMVN stays over the unperturbed cuts, so a data dir with copies has the statistics of the same
data dir without them (bit for bit), and the models' normalisation does not depend on the
perturbation. Each subset's marker (:meth:`~asr_kd.data.layout.DataDir.subset_done`) records
its factors (:data:`MARKER_KEY`), which the data module reads (:func:`prepared_speed_factors`).

Usage:
    factors = speed_factors([0.9, 1.1])               # (0.9, 1.1), checked
    copies = speed_copies(cuts, factors)              # [a_sp0.9, a_sp1.1, b_sp0.9, b_sp1.1, ...]
    prepared_speed_factors(DataDir("DATA"), "train")  # (0.9, 1.1); () without copies
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from asr_kd.data.layout import DataDir
from asr_kd.errors import ConfigError

__all__ = ["MARKER_KEY", "prepared_speed_factors", "speed_copies", "speed_factors"]

MARKER_KEY = "speed_perturb"  # in prepared_<subset>.json: the factors of the subset's copies


def speed_factors(factors: Sequence[float] | None) -> tuple[float, ...]:
    """``factors`` as a tuple of floats; :class:`ConfigError` for a factor that is not above 0,
    is 1.0 (the original is always kept) or is given twice.

    >>> speed_factors([0.9, 1.1])
    (0.9, 1.1)
    >>> speed_factors(None)
    ()
    """
    values = tuple(float(f) for f in factors or ())
    bad = [f for f in values if not f > 0 or f == 1.0]
    if bad or len(set(values)) != len(values):
        raise ConfigError(
            f"speed_perturb={list(values)}: expected distinct factors above 0 other than 1.0 "
            "(the unperturbed cut is always kept), e.g. speed_perturb=[0.9,1.1]"
        )
    return values


def speed_copies(cuts: Iterable, factors: Sequence[float]) -> list:
    """One ``cut.perturb_speed(factor)`` per cut and factor (ids ``<id>_sp<factor>``), cut by
    cut; the cuts must have recordings and no features (their fbank is computed afterwards)."""
    return [cut.perturb_speed(factor) for cut in cuts for factor in factors]


def prepared_speed_factors(data: DataDir, subset: str) -> tuple[float, ...]:
    """The factors of the speed-perturbed copies that ``asr-kd-prepare`` wrote into ``subset``;
    ``()`` when it wrote none (or the subset has no marker: prepared before markers existed)."""
    try:
        marker = json.loads(data.subset_done(subset).read_text())
    except (OSError, ValueError):
        return ()
    return tuple(float(f) for f in marker.get(MARKER_KEY, ()))
