"""The ``>>>`` examples in asr_kd's docstrings run, and every module that has some is run here.

pytest does not collect doctests by default (no ``--doctest-modules`` in pyproject.toml), and
enabling it for the whole package would import every module (ONNX Runtime, Hydra entry points)
at collection. Instead the modules with examples are listed, and a guard fails when a module
gains examples without being listed, so no docstring example silently goes unrun.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import asr_kd

PACKAGE_DIR = Path(asr_kd.__file__).parent

MODULES_WITH_EXAMPLES = [
    "asr_kd.data.librispeech",
    "asr_kd.data.perturb",
    "asr_kd.data.prepare",
    "asr_kd.data.synth_text",
    "asr_kd.data.teacher_vocab",
    "asr_kd.data.tokenizer",
    "asr_kd.distill.frames",
    "asr_kd.distill.hidden",
    "asr_kd.distill.inter_ctc",
    "asr_kd.distill.losses",
    "asr_kd.distill.pseudo",
    "asr_kd.distill.store.codecs",
    "asr_kd.distill.store.format",
    "asr_kd.distill.store.ranks",
    "asr_kd.distill.teacher",
    "asr_kd.evaluation.agreement",
    "asr_kd.evaluation.resume",
    "asr_kd.export.sherpa",
    "asr_kd.inference.factory",
    "asr_kd.inference.hlg",
    "asr_kd.inference.hotwords",
    "asr_kd.inference.lm",
    "asr_kd.inference.search",
    "asr_kd.inference.search_cost",
    "asr_kd.metrics",
    "asr_kd.models.conformer",
    "asr_kd.models.decode",
    "asr_kd.models.dropout",
    "asr_kd.export.fold",
    "asr_kd.models.loading",
    "asr_kd.models.masks",
    "asr_kd.models.streaming",
    "asr_kd.training.averaging",
    "asr_kd.training.launch",
    "asr_kd.training.task",
]


def _modules_with_examples_on_disk() -> list[str]:
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if ">>> " in path.read_text():
            parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
            found.append(".".join(p for p in parts if p != "__init__"))
    return sorted(found)


def test_every_module_with_docstring_examples_is_listed():
    assert _modules_with_examples_on_disk() == sorted(MODULES_WITH_EXAMPLES)


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_pass(name):
    result = doctest.testmod(importlib.import_module(name), verbose=False, report=True)
    assert result.attempted > 0, f"{name}: no example was collected"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
