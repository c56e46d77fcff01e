"""asr_kd: distil a full-context Conformer CTC teacher into a small streaming Conformer CTC student."""

__version__ = "0.1.0"
