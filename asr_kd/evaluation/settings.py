"""``conf/evaluate.yaml`` read once into typed settings, checked before any model is loaded.

The config is never edited: a bare value of a list key (``subsets=test``) becomes a tuple of one
here, and the runtime of the full and streaming rows is resolved here (``onnx`` when
``sherpa-onnx`` is the only one asked for), so the backends take plain values.

Usage:
    settings = EvalSettings.from_config(compose("evaluate", ["data.dir=DATA", ...]))
    settings.runtime, settings.runtimes     # "onnx", ("onnx", "sherpa-onnx")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from asr_kd.config import as_list
from asr_kd.errors import ConfigError
from asr_kd.export.quantize import check_quantize
from asr_kd.inference.factory import RUNTIMES
from asr_kd.inference.search import DECODINGS, BeamSettings, GreedySearch

__all__ = [
    "ADDED_RUNTIMES",
    "SHERPA",
    "SHERPA_HLG",
    "EvalSettings",
    "HlgSettings",
    "RtfSettings",
    "beam_settings",
    "only_greedy",
]

SHERPA = "sherpa-onnx"  # a runtime added beside torch or onnx: rows of its own
SHERPA_HLG = "sherpa-onnx-hlg"  # sherpa-onnx's streaming recognizer with an HLG graph
ADDED_RUNTIMES = (SHERPA, SHERPA_HLG)  # runtimes listed beside torch or onnx, never instead


@dataclass(frozen=True)
class HlgSettings:
    """runtime=sherpa-onnx-hlg: ``graph`` (an HLG.fst; None: built from ``beam.lm`` at
    ``beam.lm_weight`` / ``beam.word_score``), the FST decoder's ``max_active`` states."""

    graph: str | None
    max_active: int


@dataclass(frozen=True)
class RtfSettings:
    """The timed batch-1 pass: ``threads`` torch / ORT / sherpa-onnx threads, ``warmup_utts``
    decoded once untimed first, ``max_utts`` timed (the first N of a subset; None: all)."""

    threads: int
    warmup_utts: int
    max_utts: int | None


@dataclass(frozen=True)
class EvalSettings:
    """What ``asr-kd-evaluate`` runs (``conf/evaluate.yaml`` documents each key)."""

    checkpoints: dict[str, str]  # name -> checkpoint path or hf:<dir|hub id>
    data_dir: str
    max_duration: float  # seconds of audio per batch of the batched pass
    num_workers: int
    subsets: tuple[str, ...]
    chunk_sizes_ms: tuple[float, ...]
    left_chunks: int | None  # None: each model's default
    full_context: bool
    runtimes: tuple[str, ...]  # torch | onnx, then sherpa-onnx when asked for
    quantize: tuple[str, ...]  # none | int8 entries
    device: str  # of the batched pass
    rtf: RtfSettings
    check_utts: int | None  # first N utterances decoded batch-1 and compared; None: all
    decodings: tuple[str, ...]  # DECODINGS names: one set of rows each
    beam: BeamSettings
    hlg: HlgSettings
    plots: bool
    out_dir: Path

    @property
    def runtime(self) -> str:
        """The runtime of the ``full`` and ``stream-<N>ms`` rows: torch or onnx."""
        return self.runtimes[0]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> EvalSettings:
        """The settings of ``cfg``; ``ConfigError`` for a request no runtime can serve."""
        quantize = tuple(str(q) for q in as_list(cfg.quantize))
        left_chunks = cfg.left_chunks
        return cls(
            checkpoints=_checkpoints(cfg),
            data_dir=str(cfg.data.dir),
            max_duration=float(cfg.data.max_duration),
            num_workers=int(cfg.data.num_workers),
            subsets=tuple(str(s) for s in as_list(cfg.subsets)),
            chunk_sizes_ms=tuple(as_list(cfg.chunk_sizes_ms)),
            left_chunks=None if left_chunks is None else int(left_chunks),
            full_context=bool(cfg.full_context),
            runtimes=_runtimes([str(r) for r in as_list(cfg.runtime)], quantize),
            quantize=quantize,
            device=str(cfg.device),
            rtf=RtfSettings(
                int(cfg.rtf.threads),
                int(cfg.rtf.warmup_utts),
                _count_or_all(cfg.rtf.max_utts, "rtf.max_utts", minimum=1),
            ),
            check_utts=_count_or_all(cfg.check_utts, "check_utts"),
            decodings=_decodings([str(d) for d in as_list(cfg.decoding)]),
            beam=beam_settings(cfg.beam),
            hlg=HlgSettings(
                None if cfg.hlg.graph is None else str(cfg.hlg.graph), int(cfg.hlg.max_active)
            ),
            plots=bool(cfg.plots),
            out_dir=Path(cfg.out_dir),
        )


def _count_or_all(value, key: str, minimum: int = 0) -> int | None:
    """A number of utterances (>= ``minimum``), or None (null: all of the subset)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{key} must be a number of utterances >= {minimum} or null (all), got {value!r}"
        )
    return int(value)


def _checkpoints(cfg: DictConfig) -> dict[str, str]:
    """Named checkpoints given on the command line; ``null`` entries are unused name slots."""
    given = {str(k): str(v) for k, v in (cfg.ckpt or {}).items() if v is not None}
    if not given:
        raise ConfigError(
            "no checkpoints to evaluate: pass ckpt.teacher=PATH, ckpt.student_kd=PATH,"
            " ckpt.student_ctc=PATH or +ckpt.<name>=PATH"
        )
    return given


def _runtimes(asked: list[str], quantize: tuple[str, ...]) -> tuple[str, ...]:
    """The runtime of the full rows first (torch or onnx; onnx when only added runtimes are
    given), then the :data:`ADDED_RUNTIMES` asked for; the quantize entries checked against it."""
    base = [r for r in asked if r not in ADDED_RUNTIMES]
    if any(r not in RUNTIMES for r in base) or len(base) > 1 or not asked:
        raise ConfigError(
            f"runtime must be 'torch', 'onnx', 'sherpa-onnx' or 'sherpa-onnx-hlg', or a list of "
            f"one of torch/onnx and sherpa-onnx runtimes (runtime=[onnx,sherpa-onnx]), got {asked}"
        )
    runtimes = (*(base or ["onnx"]), *(r for r in ADDED_RUNTIMES if r in asked))
    for q in quantize:
        check_quantize(q, "quantize entry")
    if "int8" in quantize and runtimes[0] != "onnx":
        raise ConfigError(
            f"quantize={list(quantize)} needs runtime=onnx (int8 graphs run in ONNX Runtime), "
            f"got runtime={asked}: pass runtime=onnx or quantize=[none]"
        )
    return runtimes


def _decodings(asked: list[str]) -> tuple[str, ...]:
    unknown = [d for d in asked if d not in DECODINGS]
    if unknown or not asked or len(set(asked)) != len(asked):
        raise ConfigError(
            f"decoding must list distinct entries of {sorted(DECODINGS)} "
            f"(decoding=[greedy,beam_lm]), got {asked}"
        )
    return tuple(asked)


def beam_settings(cfg: DictConfig) -> BeamSettings:
    """``conf/evaluate.yaml``'s ``beam`` group as :class:`BeamSettings`."""
    size = int(cfg.size)
    if size < 1:
        raise ConfigError(f"beam.size must be >= 1, got {size}")
    return BeamSettings(
        size=size,
        threshold=float(cfg.threshold),
        size_token=None if cfg.size_token is None else int(cfg.size_token),
        lm=None if cfg.lm is None else str(cfg.lm),
        lexicon=None if cfg.lexicon is None else str(cfg.lexicon),
        lm_weight=float(cfg.lm_weight),
        word_score=float(cfg.word_score),
        cache_dir=str(cfg.cache_dir),
        prune_frames=None if cfg.prune_frames is None else int(cfg.prune_frames),
        hotwords=None if cfg.hotwords is None else str(cfg.hotwords),
        hotword_boost=float(cfg.hotword_boost),
    )


def only_greedy(settings: EvalSettings) -> bool:
    """Whether the run decodes greedily only (its results look as they always did)."""
    return settings.decodings == (GreedySearch.name,)
