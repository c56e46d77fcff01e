"""Tiny random transformers CTC models, written with ``save_pretrained`` (safetensors, config,
feature extractor / processor, tokenizer files): what ``hf:<dir>`` reads, built in a second.

Three families (each a function ``make_<family>(out_dir) -> out_dir``):

- ``wav2vec2_conformer``: Wav2Vec2ConformerForCTC, waveform in, 20 ms frames (conv strides
  5*8*8 = 320 samples), a LibriSpeech character vocabulary (``<pad>`` blank, ``|``, specials),
  a feature extractor that normalises and returns an attention mask;
- ``hubert``: HubertForCTC, 20 ms, a *lower-case* character vocabulary without the apostrophe,
  no attention mask (the extractor's ``return_attention_mask=False``, as wav2vec2-base ships);
- ``parakeet``: ParakeetForCTC, its own 80-bin mel (10 ms hop) and 8x subsampling: 80 ms frames,
  a BPE piece vocabulary (tokenizers, Metaspace) with the blank last, as nvidia/parakeet-ctc.

Usage: ``from tests.helpers.hf_models import FAMILIES``; the ``hf_model_dir`` fixture
(tests/conftest.py) makes each once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHARS = list("ETAOINSHRDLUCMFWYGPBVKQJXZ'")
_W2V_CONV = dict(conv_dim=(8, 8, 8), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8))
_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_NO_DROPOUT = dict(
    hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
    layerdrop=0.0, mask_time_prob=0.0,
)  # fmt: skip

PIECE_TEXTS = [
    "the cat sat on the mat",
    "a dog ran far away from home",
    "it's a test of the system",
    "we are here to stay and play",
    "one two three four five six seven",
] * 10


def _char_vocab(out_dir: Path, chars: list[str]) -> Path:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    for c in chars:
        vocab[c] = len(vocab)
    path = out_dir / "vocab.json"
    path.write_text(json.dumps(vocab))
    return path


def _save_waveform_model(out_dir, model, vocab_path, return_attention_mask: bool) -> Path:
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_path))
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=return_attention_mask,
    )
    model.save_pretrained(out_dir)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    return Path(out_dir)


def make_wav2vec2_conformer(out_dir: Path, seed: int = 0) -> Path:
    from transformers import Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = _char_vocab(out_dir, CHARS)
    config = Wav2Vec2ConformerConfig(
        vocab_size=5 + len(CHARS), pad_token_id=0, position_embeddings_type="rotary",
        feat_extract_norm="layer", num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        conformer_conv_dropout=0.0, conv_depthwise_kernel_size=7, **_W2V_CONV, **_TINY,
        **_NO_DROPOUT,
    )  # fmt: skip
    torch.manual_seed(seed)
    return _save_waveform_model(out_dir, Wav2Vec2ConformerForCTC(config), vocab, True)


def make_hubert(out_dir: Path, seed: int = 0) -> Path:
    from transformers import HubertConfig, HubertForCTC

    out_dir.mkdir(parents=True, exist_ok=True)
    chars = [c.lower() for c in CHARS if c != "'"]
    vocab = _char_vocab(out_dir, chars)
    config = HubertConfig(
        vocab_size=5 + len(chars), pad_token_id=0, feat_extract_norm="group",
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **_W2V_CONV, **_TINY,
        **_NO_DROPOUT,
    )  # fmt: skip
    torch.manual_seed(seed)
    return _save_waveform_model(out_dir, HubertForCTC(config), vocab, False)


def _piece_tokenizer(vocab_size: int = 60):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>"])
    tokenizer.train_from_iterator(PIECE_TEXTS, trainer)
    tokenizer.add_special_tokens(["<pad>"])  # the CTC blank, last id (as Parakeet's 1024)
    return tokenizer


def make_parakeet(out_dir: Path, seed: int = 0) -> Path:
    from transformers import (
        ParakeetCTCConfig,
        ParakeetFeatureExtractor,
        ParakeetForCTC,
        ParakeetProcessor,
        ParakeetTokenizer,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    pieces = _piece_tokenizer()
    blank = pieces.token_to_id("<pad>")
    tokenizer = ParakeetTokenizer(tokenizer_object=pieces, unk_token="<unk>", pad_token="<pad>")
    encoder = dict(
        subsampling_conv_channels=8, subsampling_factor=8, dropout=0.0, layerdrop=0.0,
        activation_dropout=0.0, attention_dropout=0.0, **_TINY,
    )  # fmt: skip
    config = ParakeetCTCConfig(vocab_size=blank + 1, pad_token_id=blank, encoder_config=encoder)
    torch.manual_seed(seed)
    ParakeetForCTC(config).save_pretrained(out_dir)
    processor = ParakeetProcessor(feature_extractor=ParakeetFeatureExtractor(), tokenizer=tokenizer)
    processor.save_pretrained(out_dir)
    return Path(out_dir)


FAMILIES = {
    "wav2vec2_conformer": make_wav2vec2_conformer,
    "hubert": make_hubert,
    "parakeet": make_parakeet,
}
