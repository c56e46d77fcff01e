"""A transformers CTC model (``ckpt.<name>=hf:<dir|hub id>[@revision]``, e.g. the public
teacher a student was distilled from): one ``full`` row, always in torch, whatever ``runtime``
and ``quantize`` are (it is not exported to ONNX, nor quantised, nor run through sherpa-onnx:
its row says ``runtime: torch``, ``quantize: none``).

WER/CER from batched decoding of the cuts' 16 kHz audio; ``rtf`` batch size 1 on
``rtf.threads`` threads, timing its own feature extractor with the model and the greedy search
(its features are part of it; our students' fbank is not timed); ``macs_per_audio_s`` counted
on 10 s of audio through the model (the feature extractor not counted); ``params`` and
``model_mb`` of its weights.
"""

from __future__ import annotations

import torch

from asr_kd.evaluation.backends.base import Backend, key_of
from asr_kd.evaluation.rows import ResultRow
from asr_kd.inference.timing import audio_utterances, decode_full_batched, decode_one_at_a_time
from asr_kd.models.hf import hf_macs_per_audio_second
from asr_kd.models.loading import source_prefix
from asr_kd.models.profile import count_params, model_size_mb

__all__ = ["TransformersBackend"]


class TransformersBackend(Backend):
    """The ``full`` row of a transformers CTC model (module docstring)."""

    name = "transformers"

    @classmethod
    def reads_source(cls, source: str) -> bool:
        return source_prefix(source) == "hf:"

    def runs(self, loaded) -> bool:
        """A model that reads audio (a transformers model's own feature extractor), not fbank."""
        return bool(getattr(loaded.model, "reads_audio", False))

    def rows(self, name: str, loaded, subset: str) -> list[ResultRow]:
        """Its ``full`` row; read back when a former run finished it with the same settings."""
        if not self.settings.full_context:
            return []
        device, max_duration = self.settings.device, self.settings.max_duration
        fp = self.fingerprint(name, subset, mode="full", device=device, max_duration=max_duration)
        row = self.finished(key_of(name, subset, "full", "none"), fp)
        return [row if row is not None else self.keep(fp, self._full_row(name, loaded, subset))]

    def _full_row(self, name: str, loaded, subset: str) -> ResultRow:
        settings = self.settings
        batched = decode_full_batched(
            loaded, self.corpus.batches(subset, with_audio=True), settings.device, f"{name} full"
        )

        def decode(samples: torch.Tensor) -> str:
            return loaded.transcribe(samples[None], torch.tensor([samples.shape[0]]))[0]

        timed = decode_one_at_a_time(
            decode,
            audio_utterances(self.corpus.batches(subset, with_audio=True)),
            threads=settings.rtf.threads,
            warmup_utts=settings.rtf.warmup_utts,
            max_utts=settings.rtf.max_utts,
            desc=f"{name} full, batch 1",
            total=None,
        )
        model = loaded.model.hf
        return self.row(
            batched,
            timed,
            model=name,
            subset=subset,
            mode="full",
            runtime="torch",
            quantize="none",
            rtf_batch=batched.rtf,
            batch_size=1,
            chunk_ms=None,
            left_chunks=None,
            threads=settings.rtf.threads,
            threads_batch=torch.get_num_threads(),
            latency_ms=None,
            params=count_params(model),
            macs_per_audio_s=hf_macs_per_audio_second(loaded.model),
            model_mb=model_size_mb(model),
            graph_mb=None,
            source=str(loaded.source),
            frame_shift_ms=loaded.model.frame_shift_ms,
        )
