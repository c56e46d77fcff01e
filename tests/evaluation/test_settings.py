"""EvalSettings: conf/evaluate.yaml read once into typed values; the config is not edited."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from asr_kd.config import compose
from asr_kd.errors import ConfigError
from asr_kd.evaluation.settings import EvalSettings

BASE = ["data.dir=DATA", "ckpt.student_kd=s.ckpt"]


def test_bare_values_are_lists_of_one_and_the_config_is_not_edited():
    cfg = compose("evaluate", [*BASE, "subsets=test", "chunk_sizes_ms=320", "runtime=sherpa-onnx"])
    before = OmegaConf.to_container(cfg)
    settings = EvalSettings.from_config(cfg)
    assert OmegaConf.to_container(cfg) == before
    assert (settings.subsets, settings.chunk_sizes_ms) == (("test",), (320,))
    assert settings.runtimes == ("onnx", "sherpa-onnx") and settings.runtime == "onnx"
    assert settings.checkpoints == {"student_kd": "s.ckpt"} and settings.left_chunks is None
    torch_first = compose("evaluate", [*BASE, "runtime=[sherpa-onnx,torch]"])
    assert EvalSettings.from_config(torch_first).runtimes == ("torch", "sherpa-onnx")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["runtime=[torch,onnx]"], "runtime must be"),
        (["quantize=[fp16]"], "quantize entry='fp16'"),
        (["runtime=torch", "quantize=[none,int8]"], "needs runtime=onnx"),
        (["rtf.max_utts=0"], r"rtf.max_utts must be a number of utterances >= 1 or null"),
        (["check_utts=-1"], r"check_utts must be a number of utterances >= 0 or null"),
    ],
)
def test_requests_no_runtime_can_serve_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        EvalSettings.from_config(compose("evaluate", [*BASE, *overrides]))
    with pytest.raises(ConfigError, match="no checkpoints to evaluate"):
        EvalSettings.from_config(compose("evaluate", ["data.dir=DATA"]))
