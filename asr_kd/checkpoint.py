"""Checkpoints are data: atomic writes, ``weights_only=True`` reads, self-describing contents.

A checkpoint written by ``asr-kd-train`` or ``asr-kd-distill`` is a Lightning checkpoint
(``state_dict`` keys prefixed ``model.``) plus one extra entry, ``checkpoint["asr_kd"]``:

    {"model_config": {...},   # the model's Hydra config, plain dict with ``_target_``
     "tokenizer": {...},      # Tokenizer.to_dict(): enough to rebuild the tokenizer
     "role": "teacher" | "student"}

so a single ``.ckpt`` file is enough to decode (transcribe, evaluate, export). The run's
resolved ``config.yaml`` is also written beside the ``checkpoints/`` folder.

Rebuilding a model from one: :func:`asr_kd.models.loading.load_model`.

Usage:
    atomic_torch_save(obj, "exp/run/checkpoints/last.ckpt")
    ckpt = load_checkpoint("exp/run/checkpoints/last.ckpt")   # a dict of tensors and plain data
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from asr_kd.errors import BadFileError, MissingFileError

__all__ = [
    "atomic_torch_save",
    "atomic_write",
    "file_sha256",
    "load_checkpoint",
]

_UMASK = os.umask(0)  # read once at import: os.umask can only be read by setting it
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, then rename onto ``path``.

    A reader (or a resumed run after ``kill -9``) sees the old file or the new one, never half
    of one. The file gets the usual permissions (``mkstemp`` alone would leave it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`: never a half-written checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (the checkpoint part of a teacher fingerprint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint as data (``weights_only=True``); a clear error if it is missing or foreign.

    Raises:
        MissingFileError: no such file (naming the checkpoints beside it, and last.ckpt when
            best.ckpt was asked for before any validation wrote it).
        BadFileError: not a torch file, a pickle that carries objects or code (refused unread:
            a checkpoint is data), or a torch file that is not an asr_kd checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}{_beside(path)}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # another file type: UnpicklingError, IndexError, KeyError...
        raise _unreadable(path, error) from None  # torch's text would advise weights_only=False
    if not isinstance(ckpt, dict) or "asr_kd" not in ckpt or "state_dict" not in ckpt:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise BadFileError(
            f"{path} is not an asr_kd checkpoint (expected keys 'state_dict' and 'asr_kd', "
            f"found {found})"
        )
    return ckpt


def _beside(path: Path) -> str:
    """The rest of a checkpoint-not-found message: what the folder holds instead."""
    hint = ""
    if path.name == "best.ckpt":
        hint = (
            "; best.ckpt (lowest dev WER) appears only once a validation has run (every "
            "trainer.val_check_interval steps); last.ckpt is written every "
            f"checkpoint.every_n_steps and at the end: use {path.with_name('last.ckpt')}"
        )
    if path.parent.is_dir():
        found = sorted(p.name for p in path.parent.glob("*.ckpt"))
        hint += f"; {path.parent} holds {', '.join(found) if found else 'no .ckpt file'}"
    return hint


def _unreadable(path: Path, error: Exception) -> BadFileError:
    """The error for a file ``torch.load(weights_only=True)`` refused, in asr_kd's words."""
    text = str(error)
    # torch names the global it refused ("GLOBAL builtins.print"), or an object it will not
    # build ("... allowlisted via add_safe_globals"); other refusals are not a pickle of ours
    if isinstance(error, pickle.UnpicklingError) and ("GLOBAL" in text or "allowlisted" in text):
        asks = re.search(r"GLOBAL (\S+)", text)
        return BadFileError(
            f"cannot read {path} as a torch checkpoint: it holds objects that are not tensors or "
            "plain data (a checkpoint is data; asr_kd loads only tensors, dicts, lists, numbers "
            f"and strings{f'; this one asks for {asks[1]}' if asks else ''}); re-save it with "
            "asr_kd or give the right file"
        )
    why = text.strip().splitlines()[0] if text.strip() and "weights_only" not in text else ""
    return BadFileError(
        f"cannot read {path} as a torch checkpoint ({type(error).__name__}"
        f"{': ' + why if why else ''}); expected a .ckpt written by asr-kd-train or asr-kd-distill"
    )
