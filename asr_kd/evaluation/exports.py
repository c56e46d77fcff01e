"""Exports that a rerun of ``asr-kd-evaluate`` takes back instead of redoing.

An export directory of a run (``<out_dir>/onnx/<name>/``, ``<out_dir>/sherpa/<name>/<variant>/``)
gets :data:`EXPORT_RECORD` once :func:`~asr_kd.export.onnx.export_and_check` has written and
checked its graphs: the fingerprint of what made them, every file of the directory with its size,
and the graphs' differences to torch. A rerun with the same fingerprint whose files are all there
at their recorded sizes takes the graphs and differences from the record and exports nothing
(the tolerances are judged again, by the caller, on the recorded differences); anything else
exports again.

The fingerprint (:func:`export_fingerprint`): the checkpoint's SHA-256 (its content, as
:meth:`~asr_kd.evaluation.resume.RowStore.sha256` computes it once per run), the export settings
(format, chunk sizes, left chunks, recognizer, quantize, int8 scheme) and the export code
(:func:`export_code_sha`: a SHA-256 of the sources that make and check the graphs, with the
torch, onnx and onnxruntime versions). A source hash rather than a version constant: nobody has
to remember to bump it, and its one false alarm (an edit that changes no graph) costs one export,
where a forgotten bump would reuse graphs the code no longer makes.

The record is deleted before an export starts and written atomically after it succeeded
(:func:`~asr_kd.checkpoint.atomic_write`): a killed export leaves none, so the next run redoes it.

Usage:
    checked = reused_export(loaded, out_dir / "onnx" / "student_kd", "asr_kd", [8], 2,
                            checkpoint_sha=store.sha256(ckpt_path))
    checked.check("student_kd")           # the tolerances, on fresh or recorded differences
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
from importlib.metadata import version
from pathlib import Path

import torch

import asr_kd
from asr_kd.checkpoint import atomic_write
from asr_kd.evaluation.resume import fingerprint
from asr_kd.export import onnx as onnx_export
from asr_kd.export.quantize import DEFAULT_INT8_SCHEME
from asr_kd.models.loading import LoadedModel

__all__ = ["EXPORT_RECORD", "export_code_sha", "export_fingerprint", "reused_export"]

log = logging.getLogger(__name__)

EXPORT_RECORD = "export_record.json"
_PACKAGE = Path(asr_kd.__file__).parent
# the packages that make the graphs (the export) and what they fold (the model code), whole,
# and every asr_kd module they import, directly or not (the runners the check uses, ...)
_EXPORT_PACKAGES = ("export", "models")


@functools.cache
def export_code_sha() -> str:
    """SHA-256 of the export code: ``asr_kd/export/*.py``, ``asr_kd/models/*.py`` and every
    asr_kd module they import, directly or through others (read from their import statements),
    by path and content, with the torch, onnx and onnxruntime versions."""
    digest = hashlib.sha256()
    for path in _export_files():
        digest.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for package in ("onnx", "onnxruntime"):
        digest.update(f"{package}=={version(package)}\0".encode())
    digest.update(f"torch=={torch.__version__}".encode())
    return digest.hexdigest()


def _export_files() -> list[Path]:
    """The sources :func:`export_code_sha` hashes, sorted: the export packages and the closure
    of their asr_kd imports."""
    todo = [p for pkg in _EXPORT_PACKAGES for p in (_PACKAGE / pkg).glob("*.py")]
    files: set[Path] = set()
    while todo:
        path = todo.pop()
        if path not in files:
            files.add(path)
            todo.extend(_imported_files(path) - files)
    return sorted(files)


def _imported_files(path: Path) -> set[Path]:
    """The files of the asr_kd modules ``path`` imports (at any depth of its code)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    files = (_module_file(name.split(".")[1:]) for name in names if name.split(".")[0] == "asr_kd")
    return {f for f in files if f is not None}


def _module_file(parts: list[str]) -> Path | None:
    """The source of module ``asr_kd.<parts>`` (a package: its ``__init__.py``), if any."""
    package = _PACKAGE.joinpath(*parts, "__init__.py")
    if package.is_file():
        return package
    module = _PACKAGE.joinpath(*parts[:-1], f"{parts[-1]}.py") if parts else None
    return module if module is not None and module.is_file() else None


def export_fingerprint(checkpoint_sha: str, settings: dict) -> str:
    """The fingerprint of an export (module docstring): checkpoint content, ``settings``, code."""
    return fingerprint(
        {"checkpoint": checkpoint_sha, "settings": settings, "code": export_code_sha()}
    )


def reused_export(
    loaded: LoadedModel,
    out_dir: str | os.PathLike,
    fmt: str,
    chunk_sizes,
    left_chunks: int | None,
    *,
    checkpoint_sha: str,
    recognizer: str = "auto",
    quantize: str = "none",
) -> onnx_export.Checked:
    """:func:`~asr_kd.export.onnx.export_and_check` of ``loaded`` into ``out_dir`` (its
    arguments), or the graphs an earlier run exported there with the same fingerprint."""
    out_dir = Path(out_dir)
    settings = {
        "format": fmt,
        "chunk_sizes": None if chunk_sizes is None else [int(c) for c in chunk_sizes],
        "left_chunks": left_chunks,
        "recognizer": recognizer,
        "quantize": quantize,
        "int8_scheme": DEFAULT_INT8_SCHEME,
    }
    fp = export_fingerprint(checkpoint_sha, settings)
    record = out_dir / EXPORT_RECORD
    checked = _recorded(record, fp, fmt)
    if checked is not None:
        log.info("%s: exported from the same checkpoint, settings and code, reused", out_dir)
        return checked
    record.unlink(missing_ok=True)  # graphs half rewritten by a killed export never match
    checked = onnx_export.export_and_check(
        loaded, out_dir, fmt, chunk_sizes, left_chunks, recognizer=recognizer, quantize=quantize
    )
    text = json.dumps(_record(fp, settings, checked, out_dir), indent=1) + "\n"
    atomic_write(record, lambda f: f.write(text.encode()))
    return checked


def _files(out_dir: Path) -> dict[str, int]:
    """Every file under ``out_dir`` but the record, relative path -> size in bytes."""
    return {
        p.relative_to(out_dir).as_posix(): p.stat().st_size
        for p in sorted(out_dir.rglob("*"))
        if p.is_file() and p.name != EXPORT_RECORD and not p.name.startswith(".")
    }


def _record(fp: str, settings: dict, checked: onnx_export.Checked, out_dir: Path) -> dict:
    return {
        "fingerprint": fp,
        "settings": settings,
        "code": export_code_sha(),
        "paths": {
            name: Path(p).relative_to(out_dir).as_posix() for name, p in checked.paths.items()
        },
        "diffs": checked.diffs,
        "files": _files(out_dir),
    }


def _recorded(record: Path, fp: str, fmt: str) -> onnx_export.Checked | None:
    """The export ``record`` describes, when its fingerprint is ``fp`` and its files are all
    there at their sizes; None otherwise (another export, a file missing or cut short)."""
    try:
        stored = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if stored.get("fingerprint") != fp:
        if record.is_file():
            log.info("%s: checkpoint, settings or export code changed, exporting again", record)
        return None
    out_dir = record.parent
    for name, size in stored["files"].items():
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != size:
            log.info("%s: %s missing or changed since the export, exporting again", record, path)
            return None
    paths = {name: out_dir / rel for name, rel in stored["paths"].items()}
    return onnx_export.Checked(fmt, paths, stored["diffs"])
