"""A transformers CTC model (``teacher_ckpt=hf:...``) as the teacher: online, or for the dump.

:class:`TransformersTeacher` is the ``hf:`` entry of :data:`asr_kd.distill.teacher.TEACHER_SOURCES`
(the :class:`~asr_kd.distill.teacher.Teacher` interface). Its targets, :class:`HFTeacher`, are a
teacher-targets callable, as :class:`asr_kd.distill.teacher.OnlineTeacher` is, but it reads the batch's 16 kHz audio (``batch["audio"]``, ``batch["audio_lens"]``: the data
module carries them when asked, ``with_audio``) through the model's own feature extractor; the
student keeps our fbank of the same cuts. SpecAugment never reaches the teacher (it is applied
to the student's features after the teacher has run); speed perturbation is part of the cut, so
the teacher hears the same perturbed audio (or its frames could not match the student's).

Per batch (B cuts; T_t teacher frames, T student frames, V_t teacher / V student vocabulary):

1. the teacher's posteriors at the distillation temperature, in its own vocabulary: (B, T_t, V_t);
2. into the student's vocabulary (:attr:`HFLoaded.teacher_to_student`): the teacher's blank is
   student id 0 and every character or piece keeps its place; the teacher's specials (``<s>``,
   ``</s>``, ``<unk>``) have no student id, so their mass is in no column and ends in the
   top-k store's "other" bucket (the stored k probabilities sum to less than 1);
3. to the student's frame rate by :func:`asr_kd.distill.frames.plan_conversion`'s rule (20 ms ->
   40 ms: mean of pairs in probability space; 80 ms -> 40 ms: repeat), then to the student's
   length (``feat_lens // subsampling``, :func:`~asr_kd.distill.frames.match_lengths`);
4. the top-k ids and probabilities (or all V with ``k=None``), as ``soften_teacher`` gives them;
   the requested hidden layers converted by the same rule.

Online (``asr-kd-distill distill.source=online``), the teacher keeps the accelerator busy:

- its weights are in the trainer's precision (``trainer.precision=bf16-mixed`` or ``16-mixed``:
  bfloat16 or float16, loaded on the rank's device; float32 otherwise) and its forward runs
  under the trainer's autocast (:class:`~asr_kd.models.hf.HFCTCModel`: log-softmax in float32);
- its feature extractor runs in the data loader's worker processes (:attr:`HFTeacher.batch_fields`,
  the data module's ``train_batch_fields``: the batch then carries the extractor's inputs, under
  ``teacher_inputs``, and reaches the device with the rest of it), so the training thread never
  copies audio to the CPU and features back.

Usage:
    teacher = TransformersTeacher.open("hf:exp/hf_teacher", "cpu", bf16=False)
    teacher = HFTeacher(load_hf("hf:exp/hf_teacher"), student_subsampling=4, student_shift_ms=40,
                        temperature=2.0, k=8)
    ids, probs, lens, hidden = teacher(batch)         # batch from a with_audio data module
"""

from __future__ import annotations

import torch

from asr_kd.data.features import FRAME_SHIFT_MS
from asr_kd.data.tokenizer import Tokenizer
from asr_kd.distill.frames import FrameConversion, match_lengths, plan_conversion
from asr_kd.distill.output import TeacherOutput, require_same_tokenizer
from asr_kd.distill.pseudo import greedy_labels
from asr_kd.distill.store import check_int16_vocab, teacher_fingerprint
from asr_kd.errors import ConfigError
from asr_kd.models.hf import ExtractorInputs, HFLoaded, load_hf

__all__ = [
    "TEACHER_INPUTS_KEY",
    "HFTeacher",
    "TeacherInputs",
    "TransformersTeacher",
    "hf_fingerprint",
]

# The batch entry that holds the extractor's inputs a loader worker computed (TeacherInputs).
TEACHER_INPUTS_KEY = "teacher_inputs"


class TeacherInputs:
    """``batch_fields(batch) -> {"teacher_inputs": {"inputs": {...}, "mask": (B, U)}}``: the
    teacher's feature extractor on a CPU batch's audio, in a data-loader worker. Holds the
    extractor only (it is pickled into every worker), never the model."""

    def __init__(self, extract: ExtractorInputs):
        self.extract = extract

    def __call__(self, batch: dict) -> dict:
        inputs, mask = self.extract(ExtractorInputs.waves(batch["audio"], batch["audio_lens"]))
        return {TEACHER_INPUTS_KEY: {"inputs": inputs, "mask": mask}}


def hf_fingerprint(
    loaded: HFLoaded, conversion: FrameConversion, k: int, temperature: float, **hidden
) -> dict:
    """The soft targets' identity for a transformers teacher: what
    :func:`~asr_kd.distill.store.teacher_fingerprint` holds (the weight files' SHA-256, the
    vocabulary as the student tokenizer's fingerprint, the teacher's frame shift, k, T, and the
    stored hidden layers and their codec, if any: ``hidden_layers``, ``hidden_compress``) plus the
    model id or path, its revision and the frame conversion."""
    extra = {
        "teacher": str(loaded.source.name),
        "revision": loaded.source.revision,
        "frame_conversion": conversion.name,
        "student_frame_shift_ms": float(conversion.student_shift_ms),
    }
    return teacher_fingerprint(
        loaded.weights_sha256,
        loaded.tokenizer.fingerprint,
        conversion.teacher_shift_ms,
        k,
        temperature,
        extra=extra,
        **hidden,
    )


class HFTeacher:
    """``(batch) -> TeacherOutput`` at the student's frames and vocabulary (module doc).

    Args:
        loaded: :func:`asr_kd.models.hf.load_hf`'s result.
        student_subsampling: fbank frames per student frame (the student's lengths).
        student_shift_ms: the student's frame shift (picks the conversion).
        temperature, k: the distillation temperature; ids kept per frame (None: all).
        layers: 1-based teacher layers whose outputs go in ``TeacherOutput.hidden``.
        device: where to run (the batch moves there: the dump); None runs on the batch's device
            (the model moves there: training).
    """

    needs_audio = True  # asr-kd-distill builds its data module with_audio

    def __init__(
        self,
        loaded: HFLoaded,
        student_subsampling: int,
        student_shift_ms: float,
        temperature: float,
        k: int | None = None,
        layers: tuple[int, ...] = (),
        device: torch.device | str | None = None,
    ):
        self.loaded, self.temperature, self.k, self.device = loaded, float(temperature), k, device
        self.student_subsampling, self.layers = int(student_subsampling), tuple(layers)
        self.hidden_dims = (loaded.model.hidden_size,) * len(self.layers)  # HiddenProjection's
        self.conversion: FrameConversion = plan_conversion(
            loaded.model.frame_shift_ms, student_shift_ms
        )
        self._student_ids = torch.tensor(loaded.vocab.tokenizer.teacher["ids"], dtype=torch.long)
        self._last = None  # (log_probs, lens) of the last batch, for greedy()
        # the data module's train_batch_fields (asr-kd-distill): features in the loader workers
        self.batch_fields = TeacherInputs(loaded.model.extract)

    def _student_probs(self, log_probs: torch.Tensor) -> torch.Tensor:
        """(B, T_t, V_t) teacher log-probs -> (B, T_t, V) softened probs in student columns."""
        probs = torch.softmax(log_probs / self.temperature, dim=-1)
        return probs.index_select(-1, self._student_ids.to(probs.device))

    def _top_k(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vocab = probs.shape[-1]
        if self.k is None or self.k >= vocab:
            return torch.arange(vocab, device=probs.device).expand_as(probs), probs
        top, ids = probs.topk(self.k, dim=-1)
        return ids, top

    @torch.no_grad()
    def __call__(self, batch: dict) -> TeacherOutput:
        if "audio" not in batch:
            raise ConfigError(
                "a transformers teacher (hf:...) reads the audio of each cut, but the batch has "
                "none: build the data module with with_audio=True (data.with_audio=true)"
            )
        device = batch["feats"].device if self.device is None else torch.device(self.device)
        model = self.loaded.model
        if next(model.parameters()).device != device:
            model.to(device)
        extracted = batch.get(TEACHER_INPUTS_KEY)
        if extracted is None:  # a batch built elsewhere (the dump): the extractor runs here
            extracted = self.batch_fields(batch)[TEACHER_INPUTS_KEY]
        log_probs, lens, hidden = model.run(extracted["inputs"], extracted["mask"], self.layers)
        self._last = (log_probs, lens)
        target = torch.div(batch["feat_lens"], self.student_subsampling, rounding_mode="floor")
        probs, conv_lens = self.conversion.apply(self._student_probs(log_probs), lens)
        probs, out_lens = match_lengths(probs, conv_lens, target.to(device), batch["cut_ids"])
        converted = []
        for h in hidden:
            h, h_lens = self.conversion.apply(h, lens)
            converted.append(match_lengths(h, h_lens, target.to(device), batch["cut_ids"])[0])
        ids, top = self._top_k(probs)
        return TeacherOutput(ids, top, out_lens, tuple(converted) if self.layers else None)

    def greedy(self) -> list[tuple[list[int], float]]:
        """Pseudo-labels of the last batch, the teacher's own decoding: greedy CTC over its
        vocabulary and frames at temperature 1 (its blank), each token mapped to the student's
        id (specials dropped, as :meth:`HFLoaded.decode_ids`), and the mean token peak
        posterior (:func:`asr_kd.distill.pseudo.greedy_labels`)."""
        labels = greedy_labels(*self._last, blank_id=self.loaded.vocab.blank_id)
        return [(self.loaded.student_tokens(ids), c) for ids, c in labels]


class TransformersTeacher:
    """``hf:<dir|hub id>[@revision]``: any transformers CTC model as the teacher (module doc);
    it reads audio, gives the student the tokenizer built from its vocabulary, and converts its
    frames to the student's (:func:`~asr_kd.distill.frames.plan_conversion`)."""

    needs_audio = True

    def __init__(self, loaded: HFLoaded):
        self.loaded, self.source = loaded, str(loaded.source)
        self.tokenizer: Tokenizer = loaded.tokenizer
        self.frame_shift_ms = float(loaded.model.frame_shift_ms)
        self.num_layers, self.hidden_size = loaded.model.num_layers, loaded.model.hidden_size
        check_int16_vocab(self.tokenizer.vocab_size)

    @classmethod
    def open(
        cls,
        source: str,
        device: str | torch.device = "cpu",
        bf16: bool = False,
        dtype: torch.dtype | None = None,
    ):
        return cls(load_hf(source, device, bf16=bf16, dtype=dtype))

    def fingerprint(
        self, k, temperature, student_shift_ms, hidden_layers=(), hidden_compress="none"
    ):
        conversion = plan_conversion(self.frame_shift_ms, student_shift_ms)
        return hf_fingerprint(
            self.loaded, conversion, k, temperature,
            hidden_layers=hidden_layers, hidden_compress=hidden_compress,
        )  # fmt: skip

    def targets_shift_ms(self, student_shift_ms: float) -> float:
        return float(student_shift_ms)  # converted to the student's rate

    def check_vocab(self, tokenizer: Tokenizer, where: str) -> None:
        fix = "the tokenizer built from the teacher: prepare the data with asr-kd-prepare "
        fix += f"tokenizer=from_teacher tokenizer.teacher={self.source}"
        require_same_tokenizer(self.source, self.tokenizer, tokenizer, where, fix)

    def check_frame_rate(self, student_shift_ms: float) -> None:
        plan_conversion(self.frame_shift_ms, student_shift_ms)  # or ConfigError naming both

    def targets(self, temperature, k, layers=(), student_shift_ms=40.0, device=None) -> HFTeacher:
        subsampling = round(float(student_shift_ms) / FRAME_SHIFT_MS)
        return HFTeacher(
            self.loaded, subsampling, student_shift_ms, temperature, k, tuple(layers), device
        )
