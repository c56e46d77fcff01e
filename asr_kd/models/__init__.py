"""Conformer CTC models (full-context teacher, streaming student), decoding and profiling."""

from asr_kd.models.conformer import ConformerCTC, StreamingState

__all__ = ["ConformerCTC", "StreamingState"]
