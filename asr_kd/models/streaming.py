"""The streaming step's settings, spelled once for the model, the export and the runners.

Usage:
    chunk_size = chunk_frames(model, 320)          # 320 ms -> encoder frames (8 at 40 ms)
"""

from __future__ import annotations

from torch import nn

from asr_kd.errors import ConfigError

__all__ = ["chunk_frames"]


def chunk_frames(
    model: nn.Module, chunk_ms: float, option: str = "chunk_sizes_ms entry", source: str = ""
) -> int:
    """A chunk size in ms -> encoder frames; ``ValueError`` unless it is a positive multiple of
    the model's output frame shift. ``option`` names the setting, ``source`` the model, in the
    message. Shared by export, evaluate and transcribe."""
    shift = model.frame_shift_ms
    frames = chunk_ms / shift
    if frames < 1 or frames != int(frames):
        raise ConfigError(
            f"{option} {chunk_ms} is not a positive multiple of the output frame shift "
            f"{shift} ms of {source or 'the model'}"
        )
    return int(frames)
