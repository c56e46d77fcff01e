"""What several test packages share: ``console`` (run a command as its console script, check its
one-line error), ``tiny_runs`` (overrides and configs of few-step runs) and ``hf_models`` (tiny
random transformers CTC model dirs). Imported as ``tests.helpers.<module>``: ``tests`` is a
package and the repository root is on pytest's ``pythonpath`` (pyproject.toml)."""
