"""Any transformers CTC model (``AutoModelForCTC``) as an asr_kd model: waveform batch in,
CTC log-probs (and hidden states) out.

``hf:<local dir or hub id>[@revision]`` names the model (:mod:`asr_kd.data.teacher_vocab`); a
directory written by ``save_pretrained`` loads with no network (``local_files_only``), a hub id
is resolved by ``huggingface_hub.snapshot_download`` (the cache ``from_pretrained`` uses; it
needs the network the first time). Families: wav2vec2, wav2vec2-conformer, HuBERT, WavLM,
data2vec-audio, ... (waveform in, ``config.inputs_to_logits_ratio`` samples per frame: 20 ms)
and Parakeet (its own 80-bin mel with ``hop_length`` 10 ms, ``subsampling_factor`` 8: 80 ms).

:class:`HFCTCModel` reads padded 16 kHz audio, never our fbank: each utterance goes through the
model's own feature extractor (waveform models: the extractor's normalisation, per utterance
over its valid samples; the attention mask when the extractor's ``return_attention_mask`` says
the model was trained with one, else zero padding, as those models expect; Parakeet: its mel
and the mel-frame mask). Output lengths come from the model's own length rule (the conv
front-end's ``_get_feat_extract_output_lengths``, Parakeet's ``_get_subsampling_output_length``).
Outputs are in the *teacher's* vocabulary; :class:`HFLoaded.teacher_to_student` maps ids to the
student tokenizer built from it (``-1``: a special the student has not).

Shapes: B batch, N samples, T_t teacher frames, V_t teacher vocabulary, D_t teacher width.

Usage:
    loaded = load_hf("hf:exp/hf_teacher", device="cpu")
    log_probs, lens, hidden = loaded.model(audio, audio_lens, hidden_layers=(6, 12))
    texts = loaded.transcribe(audio, audio_lens)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from asr_kd.data.features import SAMPLE_RATE
from asr_kd.data.teacher_vocab import HfSource, TeacherVocab, parse_hf_source, teacher_vocab
from asr_kd.errors import ConfigError, MissingFileError
from asr_kd.models.decode import greedy_ctc

__all__ = ["HFCTCModel", "HFLoaded", "hf_macs_per_audio_second", "load_hf", "weights_sha256"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_sha256(model_dir: Path) -> str:
    """SHA-256 over the weight files of a ``save_pretrained`` directory (sorted by name; each
    file's name and bytes), so another checkpoint of the same model is another teacher."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise MissingFileError(f"no weight files (*.safetensors, *.bin) in {model_dir}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _frame_shift_ms(config, extractor) -> float:
    """Output frame shift from the config: conv strides (waveform) or mel hop x subsampling."""
    ratio = getattr(config, "inputs_to_logits_ratio", None)
    if ratio is not None:
        return 1000.0 * ratio / SAMPLE_RATE
    encoder = getattr(config, "encoder_config", config)
    factor, hop = (
        getattr(encoder, "subsampling_factor", None),
        getattr(extractor, "hop_length", None),
    )
    if factor is None or hop is None:
        raise ConfigError(
            f"cannot tell the frame shift of a {config.model_type} model (no "
            "inputs_to_logits_ratio, nor subsampling_factor and a mel hop_length); expected a "
            "wav2vec2-style or Parakeet CTC model"
        )
    return 1000.0 * hop * factor / extractor.sampling_rate


class HFCTCModel(nn.Module):
    """A transformers CTC model and its feature extractor: frozen, in eval mode (a teacher), or
    ``trainable`` (``asr-kd-train model=hf_*``: :mod:`asr_kd.models.hf_build`).

    ``reads_audio`` tells :class:`asr_kd.training.task.AsrTask` to feed it the batch's
    ``audio``/``audio_lens`` (not our fbank).

    Args:
        model: an ``AutoModelForCTC`` model. extractor: its feature extractor.
        dtype: ``torch.bfloat16`` runs the forward under autocast (log-probs stay float32).
        trainable: keep the weights trainable and the model's mode (Lightning sets it).
    """

    reads_audio = True

    def __init__(
        self, model: nn.Module, extractor, dtype: torch.dtype | None = None, trainable: bool = False
    ):
        super().__init__()
        self.hf = model if trainable else model.eval().requires_grad_(False)
        self.extractor, self.dtype = extractor, dtype
        self.frame_shift_ms = _frame_shift_ms(model.config, extractor)
        self.vocab_size = int(model.config.vocab_size)
        self.streaming = False  # full context: evaluate gives it a "full" row only
        self.waveform = "input_values" in extractor.model_input_names
        if extractor.sampling_rate != SAMPLE_RATE:
            raise ConfigError(
                f"the model's feature extractor expects {extractor.sampling_rate} Hz audio; our "
                f"cuts are {SAMPLE_RATE} Hz"
            )

    @property
    def num_layers(self) -> int:
        config = self.hf.config
        return int(getattr(config, "encoder_config", config).num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        """D_t, the width of each layer's output (``hidden`` of :meth:`forward`)."""
        config = self.hf.config
        return int(getattr(config, "encoder_config", config).hidden_size)

    def features(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> dict:
        """The model's inputs for a padded batch: (B, N) audio, (B,) valid samples -> the
        extractor's padded ``input_values``/``input_features`` (+ ``attention_mask``)."""
        waves = [audio[b, : int(n)].float().cpu().numpy() for b, n in enumerate(audio_lens)]
        inputs = self.extractor(waves, sampling_rate=SAMPLE_RATE, padding=True, return_tensors="pt")
        return {name: value.to(audio.device) for name, value in inputs.items()}

    def _output_lengths(self, inputs: dict, audio_lens: torch.Tensor) -> torch.Tensor:
        mask = inputs.get("attention_mask")
        lens = mask.sum(-1) if mask is not None else audio_lens.to(self._device)
        if self.waveform:
            return self.hf._get_feat_extract_output_lengths(lens).long()
        return self.hf._get_subsampling_output_length(lens).long()

    @property
    def _device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def _augment(self, inputs: dict, augment) -> dict:
        """``augment(feats (B, T, F), lens (B,)) -> feats`` on a mel model's input features."""
        if self.waveform:
            raise ConfigError(
                f"spec_augment masks mel features; a {self.hf.config.model_type} model reads the "
                "waveform: set spec_augment=null (its config's mask_time_prob masks on its side)"
            )
        lens = inputs["attention_mask"].sum(-1)
        return {**inputs, "input_features": augment(inputs["input_features"], lens)}

    def forward(
        self,
        audio: torch.Tensor,
        audio_lens: torch.Tensor,
        hidden_layers: tuple[int, ...] = (),
        augment: nn.Module | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Padded 16 kHz audio -> the model's CTC posteriors (differentiable when trainable).

        Args:
            audio: (B, N) float waveform in [-1, 1], zero-padded. audio_lens: (B,) samples.
            hidden_layers: 1-based layers whose outputs to return (layer L = the last).
            augment: SpecAugment-like ``(feats, lens) -> feats`` on a mel model's features
                (training), or None.
        Returns:
            log_probs (B, T_t, V_t) float32 ``log_softmax(logits)``; lens (B,) valid frames;
            hidden: one (B, T_t, D_t) float32 tensor per requested layer.
        """
        for layer in hidden_layers:
            if not 1 <= layer <= self.num_layers:
                raise ConfigError(
                    f"teacher layer {layer} asked, the model has layers 1..{self.num_layers}"
                )
        inputs = self.features(audio.to(self._device), audio_lens)
        if augment is not None:
            inputs = self._augment(inputs, augment)
        autocast = torch.autocast(self._device.type, self.dtype, enabled=self.dtype is not None)
        with autocast:
            out = self.hf(**inputs, output_hidden_states=bool(hidden_layers))
        log_probs = out.logits.float().log_softmax(dim=-1)
        lens = self._output_lengths(inputs, audio_lens).clamp(max=log_probs.size(1))
        # hidden_states[0] is the input of layer 1 (embeddings), [l] the output of layer l
        hidden = tuple(out.hidden_states[layer].float() for layer in hidden_layers)
        return log_probs, lens, hidden


def hf_macs_per_audio_second(model: HFCTCModel, seconds: float = 10.0) -> float:
    """MACs per second of audio of the transformers model on ``seconds`` of random audio
    (:class:`~torch.utils.flop_counter.FlopCounterMode`, MACs = FLOPs / 2, as
    :func:`asr_kd.models.profile.macs_per_audio_second`); its feature extractor is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from asr_kd.models.profile import CPU_SDPA_FLOPS

    num = round(seconds * SAMPLE_RATE)
    audio = torch.randn(1, num, generator=torch.Generator().manual_seed(0)) * 0.1
    inputs = model.features(audio.to(model._device), torch.tensor([num]))
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as c:
        model.hf(**inputs)
    return c.get_total_flops() / 2 / seconds


@dataclass
class HFLoaded:
    """A transformers CTC model with what the student needs of it (a ``LoadedModel`` peer)."""

    model: HFCTCModel
    tokenizer: object  # the student Tokenizer built from the teacher's vocabulary
    vocab: TeacherVocab
    source: HfSource
    path: Path  # the local directory the files were read from
    weights_sha256: str
    role: str = "hf"

    @property
    def model_config(self) -> dict:
        config = self.model.hf.config
        return {"hf": str(self.source), "model_type": config.model_type}

    @property
    def teacher_to_student(self) -> torch.Tensor:
        """(V_t,) int64 student id of each teacher id, -1 for specials."""
        return torch.tensor(self.vocab.teacher_to_student, dtype=torch.long)

    def student_tokens(self, teacher_tokens) -> list[int]:
        """A decoded sequence of teacher ids -> the student's ids (specials and blank dropped)."""
        to_student = self.vocab.teacher_to_student
        return [to_student[t] for t in teacher_tokens if to_student[t] > 0]

    def decode_ids(self, log_probs: torch.Tensor, lens: torch.Tensor) -> list[str]:
        """Greedy CTC on teacher log-probs -> texts (specials dropped, student spelling)."""
        return [
            self.tokenizer.decode(self.student_tokens(seq))
            for seq in greedy_ctc(log_probs, lens, blank_id=self.vocab.blank_id)
        ]

    @torch.inference_mode()
    def transcribe(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> list[str]:
        """(B, N) padded audio -> B texts (greedy CTC)."""
        log_probs, lens, _ = self.model(audio, audio_lens)
        return self.decode_ids(log_probs, lens)


def _local_dir(source: HfSource) -> Path:
    if source.local:
        return Path(source.name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source.name, revision=source.revision))
    except Exception as error:  # offline, unknown id, gated: one line for the user
        raise MissingFileError(
            f"{source}: cannot resolve hub id ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}); expected network access to the hub (or the "
            "model in the local cache), or a local save_pretrained directory"
        ) from error


def load_hf(source: str, device: str | torch.device = "cpu", bf16: bool = False) -> HFLoaded:
    """Load ``hf:<dir or hub id>[@revision]``: model (eval, on ``device``), feature extractor,
    the student tokenizer from its vocabulary, the hash of its weight files."""
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    where = parse_hf_source(source)
    local = _local_dir(where)
    resolved = HfSource(str(local), None)
    kwargs = resolved.from_pretrained_kwargs()
    try:
        hf_model = AutoModelForCTC.from_pretrained(str(local), **kwargs)
        extractor = AutoFeatureExtractor.from_pretrained(str(local), **kwargs)
    except (OSError, ValueError) as error:
        raise MissingFileError(
            f"{where}: not a transformers CTC model ({str(error).splitlines()[0][:200]}); "
            "expected a save_pretrained directory of an AutoModelForCTC model with its "
            "feature extractor"
        ) from error
    vocab = teacher_vocab(f"hf:{local}")
    vocab = TeacherVocab(
        vocab.tokenizer, vocab.teacher_to_student, vocab.blank_id, vocab.tokens, str(where)
    )
    model = HFCTCModel(hf_model, extractor, torch.bfloat16 if bf16 else None).to(device)
    return HFLoaded(model, vocab.tokenizer, vocab, where, local, weights_sha256(local))


def hf_weights_sha256(source: str) -> str | None:
    """:func:`weights_sha256` of ``hf:<dir>``'s weight files; None for a hub id (known only once
    downloaded: :attr:`HFLoaded.weights_sha256`)."""
    where = parse_hf_source(source)
    return weights_sha256(Path(where.name)) if where.local else None
