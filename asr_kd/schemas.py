"""The schemas of config groups: each key of a group declared, typed, defaulted and documented
once, here (as transformers' ``configuration_*.py`` documents each argument where it is declared).

:func:`asr_kd.config.register_schemas` puts each schema into Hydra's ConfigStore as the group's
``base`` option. Every file of the group extends it, directly (``defaults: [base, _self_]``) or
through another file of the group, and states only what differs from what it extends; a key the
schema lacks fails to compose. The code reads the group through the same dataclass
(:meth:`KDConfig.from_options`), never key by key.

- :class:`KDConfig`: the ``distill`` group (``conf/distill/*.yaml``); its defaults are plain
  CTC, ``distill=none``.

Usage:
    kd = KDConfig.from_options(OmegaConf.to_container(cfg.distill, resolve=True))
    kd.loss_options()         # the keys asr_kd.distill.losses.distill_loss takes
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from asr_kd.errors import ConfigError

__all__ = ["HIDDEN_LOSSES", "KDConfig"]

HIDDEN_LOSSES = ("l1_cos", "mse")


def _key(default: Any, reader: str) -> Any:
    """A schema field and the part of the run that reads it: ``targets`` (the teacher targets,
    :func:`asr_kd.distill.teachers.build_teacher_targets`), ``loss`` (an argument of
    :func:`asr_kd.distill.losses.distill_loss`: the final layer's CTC and frame KL), a KD term
    of :mod:`asr_kd.distill.terms` (``hidden``, ``inter_ctc``) or ``pseudo``
    (:mod:`asr_kd.distill.pseudo`)."""
    return field(default=default, metadata={"reader": reader})


@dataclass
class KDConfig:
    """The ``distill`` config group: where the teacher targets come from and how the student
    learns from them. The defaults train with CTC alone (``distill=none``)."""

    # none (CTC alone) | cached (the store in targets_dir, asr-kd-dump-targets) | online (the
    # teacher runs on every batch)
    source: str = _key("none", "targets")
    # weight of frame KL to the teacher's posteriors; CTC gets 1 - alpha
    alpha: float = _key(0.0, "loss")
    # softmax temperature of both sides of the KL; cached targets: the dump's (checked)
    temperature: float = _key(1.0, "loss")
    # teacher ids per frame; null = all stored (cached) / all V (online)
    k: int | None = _key(None, "targets")
    # weight of frames whose teacher blank probability exceeds blank_threshold: < 1 keeps a
    # peaky CTC teacher's blank frames from dominating the KL average
    blank_weight: float = _key(1.0, "loss")
    blank_threshold: float = _key(0.5, "loss")
    # student frame t is compared with teacher frame t - shift (a streaming student emits later)
    shift: int = _key(0, "loss")
    # one lag per utterance in shift .. shift + delay_window, the best-fitting one
    delay_window: int = _key(0, "loss")
    # true: top-k teacher probabilities renormalised over the k ids; false: the teacher's
    # residual mass kept in an "other" bucket (an exact KL of the coarsened distributions)
    renormalize: bool = _key(True, "loss")
    # weight of hidden-state KD (distill=hidden); 0 = off
    hidden_weight: float = _key(0.0, "hidden")
    # l1_cos (DistilHuBERT: L1 - log sigmoid(cos)) | mse
    hidden_loss: str = _key("l1_cos", "hidden")
    # 1-based student layers distilled from teacher layers; null = every layer
    student_layers: list[int] | None = _key(None, "targets")
    # their teacher layers; null = spaced uniformly (3 of 6: 2, 4, 6)
    teacher_layers: list[int] | None = _key(None, "targets")
    # distill=inter_ctc: 1-based student layers with an auxiliary CTC head; null = the middle one
    inter_layers: list[int] | None = _key(None, "inter_ctc")
    # weight of those heads' loss: (1 - w) * final layer's + w * heads' mean; 0 = no heads
    inter_weight: float = _key(0.0, "inter_ctc")
    # CTC targets of untranscribed cuts: null | true (targets_dir's store) | <dump out_dir>
    pseudo_labels: Any = _key(None, "pseudo")
    # pseudo-labels below this confidence (mean peak posterior of their tokens) are not trained on
    pseudo_min_confidence: float = _key(0.0, "pseudo")

    def __post_init__(self) -> None:
        if self.hidden_loss not in HIDDEN_LOSSES:
            raise ConfigError(
                f"distill.hidden_loss={self.hidden_loss!r}, expected one of {HIDDEN_LOSSES}"
            )

    @property
    def uses_teacher(self) -> bool:
        """Whether any term needs teacher targets (frame KL or hidden states)."""
        return self.alpha != 0.0 or self.hidden_weight != 0.0

    def loss_options(self) -> dict:
        """The keys :func:`asr_kd.distill.losses.distill_loss` takes (reader ``loss``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if _reader(f) == "loss"}

    @classmethod
    def keys(cls, reader: str | None = None) -> tuple[str, ...]:
        """The group's keys, in declaration order; only those ``reader`` reads when given."""
        return tuple(f.name for f in fields(cls) if reader in (None, _reader(f)))

    @classmethod
    def from_options(cls, options: dict) -> KDConfig:
        """A ``distill`` group as a plain dict (missing keys: the defaults); a key the schema
        lacks is a typo and a one-line :class:`ConfigError` naming it and the valid keys."""
        unknown = sorted(set(options) - set(cls.keys()))
        if unknown:
            raise ConfigError(
                f"unknown distill key(s) {', '.join(unknown)}; expected one of "
                f"{', '.join(cls.keys())}"
            )
        return cls(**options)


def _reader(f) -> str:
    return f.metadata["reader"]
