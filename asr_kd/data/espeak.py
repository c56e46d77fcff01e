"""eSpeak NG through ctypes, from the library bundled by the PyPI package ``espeakng-loader``.

eSpeak NG keeps synthesis state in C statics (pitch flutter phase, noise generators, echo
buffers) that survive ``espeak_Terminate``/``espeak_Initialize``: the same text spoken twice in
one process gives different samples (measured). Determinism matters more to us than a few
milliseconds, so :class:`EspeakEngine` initialises the library once and speaks every request in
a forked child, which always starts from that same freshly initialised state, with libc's
``rand()`` reseeded (breath noise uses it). About 8 ms per request. One engine per process: the
library is not thread-safe. POSIX only (``os.fork``).

Usage:
    engine = EspeakEngine()
    [audio] = engine.speak([SpeechRequest("en-us+m3", "hello world", rate=170, pitch=50)])
    # audio: (N,) int16 at engine.sample_rate (22050 Hz)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_kd.errors import ConfigError

__all__ = ["EspeakEngine", "SpeechRequest", "variant_gender"]

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class SpeechRequest:
    """One utterance to speak: ``voice`` is ``<language>[+<variant>]``, e.g. ``en-gb-scotland+klatt``.

    ``rate`` is in words per minute (eSpeak: 80-450, default 175); ``pitch`` is 0-100 (default 50).
    ``seed`` seeds the noise some variants add (breath, whisper, Klatt aspiration).
    """

    voice: str
    text: str
    rate: int = 175
    pitch: int = 50
    seed: int = 0  # for the breath/aspiration noise of some variants (libc rand())


class EspeakEngine:
    """The eSpeak NG library, initialised once for this process (synchronous output, 22050 Hz)."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data path {data_path.decode()}")
        self._chunks: list[bytes] = []
        self._callback = _SynthCallback(self._collect)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples: int, events) -> int:
        if num_samples > 0:
            self._chunks.append(ctypes.string_at(wav, num_samples * 2))
        return 0  # 0 = continue synthesis

    def speak(self, requests: Sequence[SpeechRequest]) -> list[np.ndarray]:
        """Speak each request in turn; returns one ``(N,)`` int16 array per request.

        All requests run in one forked child (see the module docstring), so the output depends
        only on the requests (and their seeds), never on what this process spoke before.
        """
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: speak, send, exit without running any Python cleanup
            try:
                os.close(read_fd)
                try:
                    parts = [self._speak_here(r) for r in requests]
                    payload = b"\x00" + b"".join(struct.pack("<q", len(p)) + p for p in parts)
                except Exception as error:  # reported by the parent, with its message
                    payload = b"\x01" + str(error).encode()
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(payload)
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            payload = pipe.read()
        _, wait_status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(wait_status) != 0 or not payload:
            raise RuntimeError(f"eSpeak NG child process died on {list(requests)!r}")
        if payload[:1] != b"\x00":
            raise RuntimeError(f"eSpeak NG: {payload[1:].decode(errors='replace')}")
        arrays, offset = [], 1
        for _ in requests:
            (size,) = struct.unpack_from("<q", payload, offset)
            arrays.append(np.frombuffer(payload, "<i2", size // 2, offset + 8).copy())
            offset += 8 + size
        return arrays

    def _speak_here(self, request: SpeechRequest) -> bytes:
        if self._lib.espeak_SetVoiceByName(request.voice.encode()) != _EE_OK:
            raise ConfigError(f"unknown eSpeak NG voice {request.voice!r}")
        self._lib.espeak_SetParameter(_ESPEAK_RATE, int(request.rate), 0)
        self._lib.espeak_SetParameter(_ESPEAK_PITCH, int(request.pitch), 0)
        # Breath noise draws from libc rand(), whose state a process inherits from whatever
        # ran before; eSpeak's own generator has a seed setter too.
        self._libc.srand(ctypes.c_uint(request.seed & 0xFFFFFFFF))
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(request.seed))
        self._chunks.clear()
        text = request.text.encode() + b"\0"
        flags = _ESPEAK_CHARS_UTF8
        if self._lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, flags, None, None):
            raise RuntimeError(f"espeak_Synth failed on {request!r}")
        return b"".join(self._chunks)


def variant_gender(variant: str) -> str:
    """``"M"``, ``"F"`` or ``"-"`` from the variant file's ``gender`` line (``voices/!v/<variant>``)."""
    import espeakng_loader

    path = Path(espeakng_loader.get_data_path()) / "voices" / "!v" / variant
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "-"
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "gender":
            return {"male": "M", "female": "F"}.get(fields[1], "-")
    return "-"
