"""Evaluation: checkpoints x subsets x runtimes -> result rows -> results.json, results.md, plots.

- :mod:`~asr_kd.evaluation.rows`: :class:`ResultRow`, the one schema of a row (and the table's
  columns).
- :mod:`~asr_kd.evaluation.settings`: ``conf/evaluate.yaml`` read once into typed settings.
- :mod:`~asr_kd.evaluation.backends`: one backend per runtime (torch, onnx, sherpa-onnx,
  transformers) in a table, each giving its rows.
- :mod:`~asr_kd.evaluation.run`: ``evaluate(cfg)``, the loop over models x backends.
- :mod:`~asr_kd.evaluation.report`: results.json -> results.md and plots.

The error rates and timers are :mod:`asr_kd.metrics` (training's dev WER and the inference
layer's timing read them too).
"""
