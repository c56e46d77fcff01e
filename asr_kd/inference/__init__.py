"""Decoders: torch and ONNX Runtime, offline and streaming, and transcribing audio files."""
