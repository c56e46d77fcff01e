"""Session fixtures shared by every test package: a tiny synthetic corpus and its data dir.

    tiny_corpus_dir    <tmp>/LibriSpeech written by asr-kd-synth: subsets train/dev/test,
                       4/2/2 speakers, ~40/10/10 s of audio (a few utterances each)
    prepared_data_dir  DATA written by asr-kd-prepare from it (tokenizer=char, subsets
                       train/dev/test): cuts_<subset>.jsonl.gz, feats/, lang/, cmvn.json
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asr_kd.config import compose

TINY_SYNTH = [
    "hours.train=0.011",
    "hours.dev=0.003",
    "hours.test=0.003",
    "speakers.train=4",
    "speakers.dev=2",
    "speakers.test=2",
    "seed=0",
]


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory) -> Path:
    """A few synthetic utterances per subset in the LibriSpeech layout (``.../LibriSpeech``)."""
    from asr_kd.data import synthetic

    out = tmp_path_factory.mktemp("tiny_corpus")
    synthetic.run(compose("synth", [f"out_dir={out}", *TINY_SYNTH]))
    return out / "LibriSpeech"


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory, tiny_corpus_dir) -> Path:
    """``asr-kd-prepare`` of :func:`tiny_corpus_dir` with the char tokenizer."""
    from asr_kd.data import prepare

    out = tmp_path_factory.mktemp("tiny_data")
    overrides = [f"corpus_dir={tiny_corpus_dir}", f"out_dir={out}", "subsets=[train,dev,test]"]
    prepare.run(compose("prepare", [*overrides, "tokenizer=char"]))
    return out
