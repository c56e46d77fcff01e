"""What an exported model must satisfy: the left context its format can hold, and how far its
log-probs may be from torch's.

Both rules are read by every exporter and by ``asr-kd-evaluate`` (which refuses a request
before it exports anything), so each is spelled here once.

Usage:
    check_left_chunks(loaded, left_chunks, "sherpa-onnx")      # ConfigError below 1
    check_tolerance("ONNX export of exp/s.ckpt", {"full": 2e-5}, TOLERANCE)
"""

from __future__ import annotations

from asr_kd.errors import ConfigError

__all__ = ["MIN_LEFT_CHUNKS", "TOLERANCE", "check_left_chunks", "check_tolerance"]

TOLERANCE = 1e-3  # max |ORT - torch| log-prob difference of an fp32 graph (measured: ~1e-5)

# The fewest cached chunks each format's streaming step holds: our step graph has a fixed-size
# attention cache (0 chunks is a chunk-local model); sherpa-onnx's WeNet CTC model allocates
# ``num_left_chunks * chunk_size`` cache rows and fails on none.
MIN_LEFT_CHUNKS = {"asr_kd": 0, "sherpa-onnx": 1}
_CACHE = {
    "asr_kd": "the streaming ONNX step (left_chunks >= 0; or runtime=torch to asr-kd-evaluate)",
    "sherpa-onnx": "sherpa-onnx's streaming WeNet CTC model (num_left_chunks >= 1)",
}


def check_left_chunks(loaded, left_chunks: int, fmt: str) -> None:
    """``ConfigError`` unless a streaming step of format ``fmt`` (``asr_kd`` | ``sherpa-onnx``)
    can hold ``left_chunks`` cached chunks (resolved: -1 is unlimited context)."""
    least = MIN_LEFT_CHUNKS[fmt]
    if left_chunks < least:
        raise ConfigError(
            f"left_chunks={left_chunks}: {_CACHE[fmt]} needs a cache of >= {least} chunk(s); "
            f"model {loaded.path} (default_left_chunks {loaded.model.default_left_chunks}) "
            f"would run with left_chunks={left_chunks}: pass left_chunks=N (N >= {least})"
        )


def check_tolerance(what: str, diffs: dict[str, float], tolerance: float) -> None:
    """``RuntimeError`` naming every graph of ``diffs`` (name -> max |ORT - torch| log-prob)
    above ``tolerance``; NaN (a diverged model) is above any tolerance."""
    bad = {name: diff for name, diff in diffs.items() if not diff <= tolerance}
    if bad:
        raise RuntimeError(f"{what} differs from torch by {bad} > tolerance {tolerance}")
