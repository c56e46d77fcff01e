"""ONNX export: a checkpoint -> graphs for ONNX Runtime (full context and streaming steps)."""
