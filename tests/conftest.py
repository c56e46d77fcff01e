"""Session fixtures shared by every test package: a tiny synthetic corpus and its data dir.

tiny_corpus_dir    <tmp>/LibriSpeech written by asr-kd-synth: subsets train/dev/test,
                   4/2/2 speakers, ~40/10/10 s of audio (a few utterances each)
prepared_data_dir  DATA written by asr-kd-prepare from it (tokenizer=char, subsets
                   train/dev/test): cuts_<subset>.jsonl.gz, feats/, lang/, cmvn.json
prepared_sp_data_dir  the same (train/dev), train with speed-perturbed copies at 0.9 and 1.1
hf_model_dir       a factory of tiny random transformers CTC model dirs (tests/helpers/hf_models.py)

Function fixtures: ``one_thread`` (torch on one thread for the test), ``tiny`` (a factory of
tiny seeded eval-mode ConformerCTC models).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asr_kd.config import compose

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): each worker and every command a
    # test starts use one thread, or two workers' intra-op threads spin against each other.
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

TINY_SYNTH = [
    "hours.train=0.011",
    "hours.dev=0.003",
    "hours.test=0.003",
    "speakers.train=4",
    "speakers.dev=2",
    "speakers.test=2",
    "seed=0",
    # The suite's tiny models and decoders were calibrated on independent words; sentences have
    # their own tests (tests/data/test_synth_text.py).
    "text=words",
    "vocab_size=200",
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


@pytest.fixture(scope="session")
def prepared_sp_data_dir(tmp_path_factory, tiny_corpus_dir) -> Path:
    """:func:`prepared_data_dir` (subsets train/dev) with speed-perturbed copies of the train
    cuts at 0.9 and 1.1 (``asr-kd-prepare speed_perturb=[0.9,1.1]``)."""
    from asr_kd.data import prepare

    out = tmp_path_factory.mktemp("tiny_data_sp")
    overrides = [f"corpus_dir={tiny_corpus_dir}", f"out_dir={out}", "subsets=[train,dev]"]
    prepare.run(compose("prepare", [*overrides, "tokenizer=char", "speed_perturb=[0.9,1.1]"]))
    return out


@pytest.fixture(scope="session")
def make_checkpoint(prepared_data_dir):
    """``make_checkpoint(path, streaming) -> path``: a tiny *untrained* ConformerCTC saved as an
    asr_kd checkpoint (the asr_kd/checkpoint.py contract) with the prepared data's tokenizer and
    CMVN; fixed seed. For tests of decoding tools (evaluate, transcribe) that need no training."""
    import hydra.utils
    import torch

    from asr_kd.checkpoint import atomic_torch_save
    from asr_kd.data.datamodule import AsrDataModule

    dm = AsrDataModule(prepared_data_dir, num_workers=0)

    def make(path: Path, streaming: bool) -> Path:
        config = {
            "_target_": "asr_kd.models.ConformerCTC",
            "vocab_size": dm.tokenizer.vocab_size,
            "d_model": 32 if streaming else 48,
            "num_layers": 1 if streaming else 2,
            "num_heads": 2,
            "ff_dim": 64,
            "subsampling_channels": 8,
            "streaming": streaming,
            "train_chunk_sizes": [4, 8, None] if streaming else [None],
            "default_left_chunks": 2 if streaming else -1,
        }
        torch.manual_seed(0)
        model = hydra.utils.instantiate(config)
        model.set_cmvn(*dm.cmvn)
        meta = {"model_config": config, "tokenizer": dm.tokenizer.to_dict()}
        meta["role"] = "student" if streaming else "teacher"
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        atomic_torch_save({"state_dict": state, "asr_kd": meta}, path)
        return Path(path)

    return make


@pytest.fixture
def one_thread():
    """Tiny models run many small ops: on a shared 2-core machine, one thread avoids the
    spin-wait of oversubscribed intra-op threads (measured 10x slower under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny():
    """Factory of tiny eval-mode models (V=11, D=32, 2 layers, K=5), seeded, with random CMVN."""
    import torch

    from asr_kd.models import ConformerCTC

    def make(streaming: bool = True, **overrides) -> ConformerCTC:
        torch.manual_seed(0)
        args = dict(
            vocab_size=11,
            d_model=32,
            num_layers=2,
            num_heads=2,
            ff_dim=64,
            conv_kernel_size=5,
            subsampling_channels=8,
            dropout=0.0,
            streaming=streaming,
        )
        if streaming:
            args["train_chunk_sizes"] = [2, 4, None]
        model = ConformerCTC(**{**args, **overrides}).eval()
        model.set_cmvn(torch.randn(80) * 0.1, torch.rand(80) + 0.5)
        return model

    return make


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory):
    """``hf_model_dir(family) -> Path``: a tiny random transformers CTC model written with
    ``save_pretrained`` (tests/helpers/hf_models.py: wav2vec2_conformer, hubert, parakeet), made once."""
    from tests.helpers import hf_models

    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            made[family] = hf_models.FAMILIES[family](tmp_path_factory.mktemp(f"hf_{family}"))
        return made[family]

    return make
