"""Any transformers CTC model (``AutoModelForCTC``) as an asr_kd model: waveform batch in,
CTC log-probs (and hidden states) out.

``hf:<local dir or hub id>[@revision]`` names the model (:mod:`asr_kd.data.teacher_vocab`); a
directory written by ``save_pretrained`` loads with no network (``local_files_only``), a hub id
is resolved by ``huggingface_hub.snapshot_download`` (the cache ``from_pretrained`` uses; it
needs the network the first time). Families: every ``AutoModelForCTC`` one whose extractor
gives waveform or features (wav2vec2 and its kin: 20 ms frames; Parakeet, LASR, Granite
Speech: mel; ...); one whose lengths follow no strided-convolution rule is refused by name.

:class:`HFCTCModel` reads padded 16 kHz audio, never our fbank: each utterance goes through the
model's own feature extractor (waveform models: the extractor's normalisation, per utterance
over its valid samples; the attention mask when the extractor's ``return_attention_mask`` says
the model was trained with one, else zero padding, as those models expect; Parakeet: its mel
and the mel-frame mask). Output lengths and the frame shift come from what the model returns,
for any family: :func:`measure_lengths` reads the logits length of a few unpadded probe inputs
once, at load, and fits the rule of strided convolutions to it (:class:`LengthRule`); each
utterance's length is that rule on its valid input units (the extractor's mask).
Outputs are in the *teacher's* vocabulary; :class:`HFLoaded.teacher_to_student` maps ids to the
student tokenizer built from it (``-1``: a special the student has not).

Shapes: B batch, N samples, T_t teacher frames, V_t teacher vocabulary, D_t teacher width.

Usage:
    loaded = load_hf("hf:exp/hf_teacher", device="cpu")
    log_probs, lens, hidden = loaded.model(audio, audio_lens, hidden_layers=(6, 12))
    texts = loaded.transcribe(audio, audio_lens)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from asr_kd.data.features import SAMPLE_RATE
from asr_kd.data.teacher_vocab import HfSource, TeacherVocab, parse_hf_source, teacher_vocab
from asr_kd.errors import ConfigError, MissingFileError
from asr_kd.models.decode import greedy_ctc

__all__ = [
    "ExtractorInputs",
    "HFCTCModel",
    "HFLoaded",
    "LengthRule",
    "hf_macs_per_audio_second",
    "hf_weights_sha256",
    "load_hf",
    "measure_lengths",
    "weights_sha256",
]

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


class LengthRule(NamedTuple):
    """How many output frames a transformers CTC model gives for ``u`` valid input units (samples
    or feature frames, as its extractor's mask counts them): ``(u + offset) // units + 1``, the
    form every stack of strided convolutions, mel framing and frame stacking has; and its frame
    shift. Measured by :func:`measure_lengths` from the logits of unpadded probe inputs."""

    units: int  # input units per output frame
    offset: int
    frame_shift_ms: float

    def __call__(self, valid_units: torch.Tensor) -> torch.Tensor:
        """(B,) valid input units -> (B,) output frames (>= 0)."""
        return (torch.div(valid_units + self.offset, self.units, rounding_mode="floor") + 1).clamp(
            min=0
        )


_PROBE_SAMPLES = (SAMPLE_RATE, SAMPLE_RATE + 40960)  # 1 s and 2.56 s more: whole frames of any
# family (320 samples, 1280 = 8 mel hops of 160 ...)
_CHECK_SAMPLES = (12345, SAMPLE_RATE + 7777)  # odd lengths the measured rule must predict


def measure_lengths(hf: nn.Module, features) -> LengthRule:
    """The :class:`LengthRule` of a model from unpadded probe forwards: the frame shift from two
    lengths' logits, the offset from where one more frame starts (a binary search over samples),
    checked on two odd lengths. ``features(waves) -> model inputs, (mask (B, U))``; a model whose
    lengths follow no such rule is refused naming its type (:class:`ConfigError`)."""
    g = torch.Generator().manual_seed(0)

    def probe(n: int) -> tuple[int, int]:  # (input units, output frames) of n samples
        inputs, mask = features([0.1 * torch.randn(n, generator=g).numpy()])
        try:
            with torch.no_grad():
                return int(mask.shape[-1]), int(hf(**inputs).logits.shape[1])
        except Exception as error:  # a family that cannot run on its own extractor's output
            raise ConfigError(
                f"a {hf.config.model_type} model does not run on its feature extractor's output "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); expected a CTC "
                "model that reads the waveform or features its extractor gives"
            ) from error

    was_training = hf.training  # eval: a probe must not move BatchNorm statistics
    try:
        return _measure(hf.eval(), probe)
    finally:
        hf.train(was_training)


def _measure(hf: nn.Module, probe) -> LengthRule:
    model_type = hf.config.model_type
    (n1, n2), ((u1, t1), (u2, t2)) = _PROBE_SAMPLES, map(probe, _PROBE_SAMPLES)
    units, samples = (u2 - u1) / max(t2 - t1, 1), (n2 - n1) / max(t2 - t1, 1)
    if t2 <= t1 or units != int(units):
        raise ConfigError(
            f"a {model_type} model gives {t1} then {t2} frames for {u1} then {u2} input units: "
            "not a whole number of units per output frame; expected a CTC model with a fixed "
            "frame rate"
        )
    low, high = n1, n1 + int(round(samples)) + 1  # the first n with one frame more is in here
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if probe(mid)[1] > t1 else (mid, high)
    rule = LengthRule(int(units), t1 * int(units) - probe(high)[0], 1000.0 * samples / SAMPLE_RATE)
    for n in _CHECK_SAMPLES:
        u, t = probe(n)
        if int(rule(torch.tensor(u))) != t:
            raise ConfigError(
                f"a {model_type} model gives {t} frames for {u} input units, its measured rule "
                f"{rule} says {int(rule(torch.tensor(u)))}; expected output lengths that "
                "strided convolutions give (cannot tell its utterances' lengths in a batch)"
            )
    return rule


def _encoder_config(config):
    """The config that holds the layers (a composite model's encoder or audio sub-config)."""
    return next(
        (getattr(config, k) for k in ("encoder_config", "audio_config") if hasattr(config, k)),
        config,
    )


class ExtractorInputs:
    """A feature extractor's model inputs for a list of utterances, on the CPU: picklable and
    holding no model, so it runs in data-loader workers too.

    ``(waves) -> (inputs, mask)``: (N_b,) float arrays -> the model's padded inputs as its
    extractor gives them by default, and the (B, U) mask of valid input units (asked for
    separately when the default has none: the inputs must stay the default's, e.g. normalised
    without one)."""

    def __init__(self, extractor):
        self.extractor = extractor
        # the extractor's mask counts each utterance's valid input units
        self.mask_key = next(k for k in extractor.model_input_names if k.endswith("mask"))

    @staticmethod
    def waves(audio: torch.Tensor, audio_lens: torch.Tensor) -> list:
        """(B, N) padded audio, (B,) valid samples -> B float32 arrays (on the CPU)."""
        audio, audio_lens = audio.float().cpu(), audio_lens.cpu()
        return [audio[b, : int(n)].numpy() for b, n in enumerate(audio_lens)]

    def __call__(self, waves: list) -> tuple[dict, torch.Tensor]:
        kwargs = dict(sampling_rate=SAMPLE_RATE, padding=True, return_tensors="pt")
        inputs = self.extractor(waves, **kwargs)
        mask = inputs.get(self.mask_key)
        if mask is None:
            mask = self.extractor(waves, return_attention_mask=True, **kwargs)[self.mask_key]
        return dict(inputs), mask


class HFCTCModel(nn.Module):
    """A transformers CTC model and its feature extractor: frozen, in eval mode (a teacher), or
    ``trainable`` (``asr-kd-train model=hf_*``: :mod:`asr_kd.models.hf_build`).

    ``reads_audio`` tells :class:`asr_kd.training.task.AsrTask` to feed it the batch's
    ``audio``/``audio_lens`` (not our fbank).

    Precision: the forward runs under autocast of ``dtype``, else of the weights' own dtype when
    they are bfloat16 or float16 (an online teacher loaded in the trainer's precision), else
    under whatever autocast its caller set (the trainer's ``bf16-mixed``), never switching it
    off. Feature extraction and ``log_softmax`` stay float32 outside it: the extractor's
    normalisation divides by a standard deviation and the teacher's posteriors are softened at a
    temperature, both of which lose digits in 8 mantissa bits.

    Args:
        model: an ``AutoModelForCTC`` model (on any device, in any float dtype).
        extractor: its feature extractor.
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
        self.vocab_size = int(model.config.vocab_size)
        self.streaming = False  # full context: evaluate gives it a "full" row only
        self.waveform = "input_values" in extractor.model_input_names
        self.extract = ExtractorInputs(extractor)
        if extractor.sampling_rate != SAMPLE_RATE:
            raise ConfigError(
                f"the model's feature extractor expects {extractor.sampling_rate} Hz audio; our "
                f"cuts are {SAMPLE_RATE} Hz"
            )
        with self._precision():
            self.lengths = measure_lengths(self.hf, self._inputs)
        self.frame_shift_ms = self.lengths.frame_shift_ms

    def _precision(self):
        """The autocast of the forward (class doc): ``dtype``, else the weights' half dtype,
        else none of its own (the caller's stays in force)."""
        weights = next(self.hf.parameters()).dtype
        dtype = self.dtype or (weights if weights in (torch.bfloat16, torch.float16) else None)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self._device.type, dtype)

    @property
    def num_layers(self) -> int:
        return int(_encoder_config(self.hf.config).num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        """D_t, the width of each layer's output (``hidden`` of :meth:`forward`)."""
        return int(_encoder_config(self.hf.config).hidden_size)

    def _inputs(self, waves: list, device: torch.device | None = None) -> tuple[dict, torch.Tensor]:
        """:class:`ExtractorInputs` of ``waves``, on ``device`` (None: the model's)."""
        inputs, mask = self.extract(waves)
        device = self._device if device is None else device
        return {name: value.to(device) for name, value in inputs.items()}, mask.to(device)

    def features(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, device: torch.device | None = None
    ) -> tuple[dict, torch.Tensor]:
        """The model's inputs for a padded batch: (B, N) audio, (B,) valid samples -> the
        extractor's padded ``input_values``/``input_features`` (+ its mask when the model reads
        one), and the (B, U) mask of valid input units; on ``device`` (None: the model's).

        The extractor runs on the CPU: in a data-loader worker (:meth:`HFTeacher.batch_fields
        <asr_kd.distill.hf_teacher.HFTeacher.batch_fields>`, ``device=cpu``) it costs the
        training thread nothing."""
        return self._inputs(ExtractorInputs.waves(audio, audio_lens), device)

    @property
    def _device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def _augment(self, inputs: dict, mask: torch.Tensor, augment) -> dict:
        """``augment(feats (B, T, F), lens (B,)) -> feats`` on a mel model's input features."""
        if self.waveform:
            raise ConfigError(
                f"spec_augment masks mel features; a {self.hf.config.model_type} model reads the "
                "waveform: set spec_augment=null (its config's mask_time_prob masks on its side)"
            )
        lens = mask.sum(-1)
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
        inputs, mask = self.features(audio, audio_lens)
        if augment is not None:
            inputs = self._augment(inputs, mask, augment)
        return self.run(inputs, mask, hidden_layers)

    def run(
        self, inputs: dict, mask: torch.Tensor, hidden_layers: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`forward` from the extractor's inputs and (B, U) mask (:meth:`features`)."""
        for layer in hidden_layers:
            if not 1 <= layer <= self.num_layers:
                raise ConfigError(
                    f"teacher layer {layer} asked, the model has layers 1..{self.num_layers}"
                )
        device = self._device
        inputs = {name: value.to(device, non_blocking=True) for name, value in inputs.items()}
        with self._precision():
            out = self.hf(**inputs, output_hidden_states=bool(hidden_layers))
        log_probs = out.logits.float().log_softmax(dim=-1)
        mask = mask.to(device, non_blocking=True)
        lens = self.lengths(mask.sum(-1)).clamp(max=log_probs.size(1))
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
    inputs, _ = model.features(audio, torch.tensor([num]))
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
    role: str = "hf"

    @functools.cached_property
    def weights_sha256(self) -> str:
        """:func:`weights_sha256` of its files, hashed when first asked for (a fingerprint):
        a 0.6 B model's 2.4 GB are read once, by the process that needs them."""
        return weights_sha256(self.path)

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


def load_hf(
    source: str,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    dtype: torch.dtype | None = None,
) -> HFLoaded:
    """Load ``hf:<dir or hub id>[@revision]``: model (eval, on ``device``), feature extractor,
    the student tokenizer from its vocabulary (the hash of its weight files when asked for).

    ``bf16``: the forward under bfloat16 autocast (the dump). ``dtype``: the weights' dtype
    (``torch.bfloat16`` or ``torch.float16``: an online teacher in the trainer's precision, run
    under autocast of that dtype; None: as stored, float32 for every family here). The lengths
    are measured on ``device`` after the cast."""
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    where = parse_hf_source(source)
    local = _local_dir(where)
    resolved = HfSource(str(local), None)
    kwargs = resolved.from_pretrained_kwargs()
    try:
        hf_model = AutoModelForCTC.from_pretrained(str(local), dtype=dtype, **kwargs)
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
    model = HFCTCModel(hf_model.to(device), extractor, torch.bfloat16 if bf16 else None)
    return HFLoaded(model, vocab.tokenizer, vocab, where, local)


def hf_weights_sha256(source: str) -> str | None:
    """:func:`weights_sha256` of ``hf:<dir>``'s weight files; None for a hub id (known only once
    downloaded: :attr:`HFLoaded.weights_sha256`)."""
    where = parse_hf_source(source)
    return weights_sha256(Path(where.name)) if where.local else None
