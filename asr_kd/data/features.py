"""80-dim log-mel filterbank features (lhotse ``Fbank``, Kaldi-compatible, 25 ms / 10 ms).

One extractor for everything: ``asr-kd-prepare`` stores these features for every cut, and
:func:`compute_fbank` gives the same ones (up to lilcom's compression) for audio that starts
outside a prepared data dir (transcribe, speed-perturbed training cuts). CMVN is not applied
here: the model owns it.

Usage:
    samples, sample_rate = load_audio("utt.flac")
    feats = compute_fbank(samples, sample_rate)      # (T, 80) float32, T ~ duration / 10 ms
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asr_kd.errors import BadFileError

__all__ = [
    "FBANK_DIM",
    "FRAME_SHIFT_MS",
    "SAMPLE_RATE",
    "compute_fbank",
    "fbank_extractor",
    "load_audio",
]

FBANK_DIM = 80
FRAME_SHIFT_MS = 10
SAMPLE_RATE = 16000


@lru_cache(maxsize=1)
def fbank_extractor():
    """The lhotse extractor used for stored and on-the-fly features (dither 0: deterministic)."""
    from lhotse import Fbank, FbankConfig

    return Fbank(FbankConfig(num_mel_bins=FBANK_DIM, frame_shift=FRAME_SHIFT_MS / 1000, dither=0.0))


def resample(samples: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``(N,)`` float32 resampled with lhotse's resampler, the one lhotse applies to recordings."""
    if sample_rate == target_rate:
        return samples
    from lhotse.augmentation import Resample

    return Resample(sample_rate, target_rate)(samples[None, :])[0].astype(np.float32)


def compute_fbank(samples: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Log-mel filterbank of mono audio.

    Args:
        samples: ``(N,)`` float samples in [-1, 1] (a ``(1, N)`` array is accepted too).
        sample_rate: Hz; resampled to 16 kHz first when different.

    Returns:
        ``(T, 80)`` float32 tensor, ``T = round(N / 160)`` at 16 kHz (lhotse, ``snip_edges=False``).
    """
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2 and samples.shape[0] == 1:
        samples = samples[0]
    if samples.ndim != 1:
        raise ValueError(f"compute_fbank expects mono (N,) samples, got shape {samples.shape}")
    samples = resample(samples, int(sample_rate))
    if samples.size < SAMPLE_RATE * FRAME_SHIFT_MS // 1000:  # lhotse fails below one frame shift
        raise ValueError(
            f"audio too short: {samples.size / SAMPLE_RATE * 1000:.1f} ms, fbank needs at least "
            f"{FRAME_SHIFT_MS} ms"
        )
    feats = fbank_extractor().extract(samples, SAMPLE_RATE)
    return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """``(samples (N,) float32 mono, sample_rate)``; channels are averaged.

    Raises ``ValueError`` naming the file when it cannot be read or decoded, or when it holds
    NaN or infinite samples (they would turn every frame of the utterance into NaN).
    """
    if not Path(path).is_file():  # libsndfile says "System error." / "Format not recognised."
        why = "is a directory" if Path(path).is_dir() else "no such file"
        raise BadFileError(f"cannot read audio {path}: {why}")
    try:
        samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, OSError...
        raise BadFileError(f"cannot read audio {path}: {error}") from error
    if not np.isfinite(samples).all():
        raise BadFileError(f"cannot read audio {path}: it holds NaN or infinite samples")
    return samples.mean(axis=1), int(sample_rate)
