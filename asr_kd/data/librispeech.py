"""Read a LibriSpeech-layout directory: subsets, transcripts, and the audio they point to.

    <corpus_dir>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <corpus_dir>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "<utt-id> TEXT"

Both real LibriSpeech (``train-clean-100``, ``dev-clean``, ``test-other``...) and the synthetic
corpus of ``asr-kd-synth`` read the same way. Problems that concern one utterance (a transcript
line without audio, audio without a transcript line) are returned per reason, never raised; a
missing or empty subset directory is an error naming the path.

Usage:
    scan = scan_subset("LibriSpeech", "dev-clean")
    scan.utterances[0].utt_id, scan.utterances[0].audio_path, scan.problems["missing_audio"]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from asr_kd.errors import BadFileError, MissingFileError

__all__ = [
    "AUDIO_SUFFIXES",
    "LibriUtterance",
    "SubsetScan",
    "read_transcripts",
    "scan_subset",
    "subset_table",
]

AUDIO_SUFFIXES = (".flac", ".wav")
MISSING_AUDIO = "missing_audio"
UNTRANSCRIBED_AUDIO = "untranscribed_audio"


@dataclass(frozen=True)
class LibriUtterance:
    """One transcript line (or one audio file of an untranscribed subset)."""

    utt_id: str
    speaker: str
    chapter: str
    text: str  # as written in trans.txt (not normalised); "" when untranscribed
    audio_path: Path


@dataclass
class SubsetScan:
    """Utterances of a subset, sorted by id, and the problems met: reason -> file names."""

    subset: str
    utterances: list[LibriUtterance] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def read_transcripts(path: Path) -> list[tuple[str, str]]:
    """``(utt_id, text)`` per non-blank line of a ``.trans.txt`` file (text may be empty)."""
    pairs = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.strip().split(maxsplit=1)
        if fields:
            pairs.append((fields[0], fields[1] if len(fields) > 1 else ""))
    return pairs


def _find_audio(chapter_dir: Path, utt_id: str) -> Path | None:
    for suffix in AUDIO_SUFFIXES:
        path = chapter_dir / f"{utt_id}{suffix}"
        if path.is_file():
            return path
    return None


def _chapter_dirs(subset_dir: Path) -> list[Path]:
    return sorted(p for p in subset_dir.glob("*/*") if p.is_dir())


def scan_subset(corpus_dir: str | Path, subset: str, transcribed: bool = True) -> SubsetScan:
    """Pair every transcript line of ``<corpus_dir>/<subset>`` with its audio file.

    With ``transcribed=False`` every audio file becomes an utterance with empty text (audio for
    distillation only) and transcripts are ignored.

    Raises:
        FileNotFoundError: the subset directory does not exist.
        ValueError: it holds no speaker/chapter folder with audio or transcripts.
    """
    subset_dir = Path(corpus_dir) / subset
    if not subset_dir.is_dir():
        raise MissingFileError(f"subset directory {subset_dir} does not exist")
    scan = SubsetScan(subset)
    for chapter_dir in _chapter_dirs(subset_dir):
        speaker, chapter = chapter_dir.parent.name, chapter_dir.name
        audio = {p.stem: p for p in chapter_dir.iterdir() if p.suffix in AUDIO_SUFFIXES}
        if not transcribed:
            for utt_id, path in audio.items():
                scan.utterances.append(LibriUtterance(utt_id, speaker, chapter, "", path))
            continue
        seen = set()
        for trans in sorted(chapter_dir.glob("*.trans.txt")):
            for utt_id, text in read_transcripts(trans):
                seen.add(utt_id)
                path = _find_audio(chapter_dir, utt_id)
                if path is None:
                    scan.problems[MISSING_AUDIO].append(f"{subset}/{speaker}/{chapter}/{utt_id}")
                    continue
                scan.utterances.append(LibriUtterance(utt_id, speaker, chapter, text, path))
        for utt_id in sorted(set(audio) - seen):
            scan.problems[UNTRANSCRIBED_AUDIO].append(
                str(audio[utt_id].relative_to(Path(corpus_dir)))
            )
    if not scan.utterances and not scan.problems:
        raise BadFileError(
            f"subset directory {subset_dir} is empty: expected <speaker>/<chapter>/ folders with "
            "audio and .trans.txt files"
        )
    scan.utterances.sort(key=lambda u: u.utt_id)
    return scan


def subset_table(
    rows: dict[str, dict], columns: list[tuple[str, str]], headings: dict[str, str] | None = None
) -> str:
    """A per-subset summary table: one line per subset, one right-aligned column per
    ``(key, format)``, headed by the key or ``headings[key]``.

    >>> print(subset_table({"dev": {"hours": 0.25, "utterances": 7}}, [("utterances", "d"),
    ...                    ("hours", ".3f")]))
    subset             utterances    hours
    dev                         7    0.250
    """
    headings = headings or {}
    widths = [max(9, len(headings.get(key, key)) + 1) for key, _ in columns]
    lines = [
        "subset".ljust(18)
        + "".join(
            headings.get(key, key).rjust(w) for (key, _), w in zip(columns, widths, strict=True)
        )
    ]
    for name, row in rows.items():
        cells = (
            format(row[key], fmt).rjust(w) for (key, fmt), w in zip(columns, widths, strict=True)
        )
        lines.append(name.ljust(18) + "".join(cells))
    return "\n".join(lines)
