"""A transformers CTC model built here from a small config, trained by ``asr-kd-train``, and
written with ``save_pretrained``: a foreign teacher made with our own tooling.

:func:`build_parakeet_ctc` (``conf/model/hf_parakeet_small.yaml``) makes a randomly initialised
``ParakeetForCTC`` (FastConformer: its own 80-bin mel, 10 ms hop, depthwise-separable conv
subsampling) as a *trainable* :class:`~asr_kd.models.hf.HFCTCModel`: the training engine feeds
it the batch's audio (``reads_audio``) and trains it with CTC as it does our Conformer.

Its vocabulary is the prepared data's character tokenizer, id for id: our blank (id 0) is the
model's ``pad_token_id`` (the CTC blank), ``▁`` the word boundary. :func:`hf_tokenizer` writes it
as a ``ParakeetTokenizer`` (a ``tokenizers`` character model: Metaspace pre-tokenizer, no merges),
so ``AutoTokenizer`` encodes a transcript to our ids and the processor's CTC ``decode`` reads the
model's output; ``asr-kd-prepare tokenizer=from_teacher tokenizer.teacher=hf:<dir>`` gives back
the same ids (:func:`asr_kd.data.teacher_vocab.teacher_vocab`).

:func:`save_hf_model` writes ``model.safetensors``, ``config.json`` and the processor (feature
extractor + tokenizer): the directory ``hf:<dir>`` loads with no network.

Usage:
    model = build_parakeet_ctc(vocab_size=29, hidden_size=192, num_layers=6)
    log_probs, lens, _ = model(audio, audio_lens)          # (B, T', V), (B,); 40 ms frames
    save_hf_model(model, Tokenizer.load("DATA/lang"), "exp/hf_teacher/hf_model")
    loaded = load_hf("hf:exp/hf_teacher/hf_model")
"""

from __future__ import annotations

import shutil
from pathlib import Path

from asr_kd.data.tokenizer import Tokenizer
from asr_kd.errors import ConfigError
from asr_kd.models.hf import HFCTCModel

__all__ = ["build_parakeet_ctc", "hf_tokenizer", "save_hf_model"]


def build_parakeet_ctc(
    vocab_size: int,
    hidden_size: int = 192,
    num_layers: int = 6,
    num_heads: int = 4,
    ff_dim: int = 768,
    conv_kernel_size: int = 15,
    subsampling_factor: int = 4,
    subsampling_channels: int = 64,
    dropout: float = 0.1,
    blank_id: int = 0,
) -> HFCTCModel:
    """A random ``ParakeetForCTC`` of this size with its feature extractor, trainable.

    ``subsampling_factor`` (a power of 2) x 10 ms is the output frame shift: 4 -> 40 ms, the
    rate at which a character vocabulary fits CTC (8, Parakeet's own, suits word pieces).
    """
    from transformers import ParakeetCTCConfig, ParakeetFeatureExtractor, ParakeetForCTC

    if subsampling_factor < 2 or subsampling_factor & (subsampling_factor - 1):
        raise ConfigError(
            f"model.subsampling_factor={subsampling_factor}; Parakeet's conv subsampling "
            "expected a power of 2 (2, 4, 8)"
        )
    encoder = dict(
        hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        intermediate_size=ff_dim, conv_kernel_size=conv_kernel_size,
        subsampling_factor=subsampling_factor, subsampling_conv_channels=subsampling_channels,
        dropout=dropout, attention_dropout=dropout, activation_dropout=dropout, layerdrop=0.0,
    )  # fmt: skip
    config = ParakeetCTCConfig(vocab_size=vocab_size, pad_token_id=blank_id, encoder_config=encoder)
    model = ParakeetForCTC(config)
    _torch_default_init(model)
    return HFCTCModel(model, ParakeetFeatureExtractor(), trainable=True)


def _torch_default_init(model) -> None:
    """Linear and conv weights re-drawn with PyTorch's default (Kaiming-uniform) init, which our
    Conformer gets. transformers' ``normal(0, initializer_range=0.02)`` suits fine-tuning, not
    training from scratch: a hf_parakeet_small with it stayed on the blank plateau (train CTC
    1.6-1.8 after 570 updates, dev WER 100 % at 500) where teacher_small, same data and
    schedule, was at 0.67 and 68 % (docs/teachers.md)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            module.reset_parameters()


def hf_tokenizer(tokenizer: Tokenizer):
    """Our character tokenizer as a ``ParakeetTokenizer`` with the same ids (blank = pad).

    Raises:
        ConfigError: a BPE tokenizer (only characters are written here).
    """
    from tokenizers import Tokenizer as CharModel
    from tokenizers import decoders, models, pre_tokenizers
    from transformers import ParakeetTokenizer

    symbols = tokenizer.symbols
    if tokenizer.kind != "char" or any(len(s) != 1 for s in symbols[1:]):
        raise ConfigError(
            f"a transformers model is written with a character vocabulary; the data's tokenizer "
            f"is {tokenizer.kind} ({tokenizer.vocab_size} ids): prepare the data with "
            "tokenizer=char"
        )
    chars = CharModel(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[]))
    chars.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")  # " " -> "▁"
    chars.decoder = decoders.Metaspace(prepend_scheme="never")
    chars.add_special_tokens([symbols[0]])  # the blank: never produced by encode
    return ParakeetTokenizer(tokenizer_object=chars, pad_token=symbols[0])


def save_hf_model(model: HFCTCModel, tokenizer: Tokenizer, out_dir: str | Path) -> Path:
    """``save_pretrained`` of ``model`` (weights, config) and its processor (feature extractor
    + :func:`hf_tokenizer`) into ``out_dir``, replacing it whole (written beside, then renamed).
    """
    from transformers import ParakeetProcessor

    if model.hf.config.model_type != "parakeet_ctc":
        raise ConfigError(
            f"writing a {model.hf.config.model_type} model is not supported; expected a "
            "ParakeetForCTC model (model=hf_parakeet_small)"
        )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.hf.save_pretrained(tmp)
    processor = ParakeetProcessor(
        feature_extractor=model.extractor,
        tokenizer=hf_tokenizer(tokenizer),
        blank_token=tokenizer.symbols[0],
        decoder_type="ctc",
    )
    processor.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
