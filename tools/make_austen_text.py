"""Write asr_kd/data/texts/austen.tsv.gz: Jane Austen's six novels, one normalised sentence a line.

Source: the Project Gutenberg texts of the six novels (public domain) as packaged by the R
package janeaustenr 1.0.0 (Julia Silge, MIT licence), which Debian ships as
``r-cran-janeaustenr``. The package's lazy-load data base (``data/Rdata.rdx`` + ``Rdata.rdb``)
is read with the pip package ``rdata``; R itself is not needed.

Normalisation is LibriSpeech's (openslr 11): upper case, A-Z, apostrophes and single spaces;
Mr./Mrs./Dr./St. are spelled out (MISTER, MISSUS, DOCTOR, SAINT) as LibriSpeech spells them,
hyphens and dashes become spaces, italics underscores are dropped. A sentence holding anything
else (a digit, "&c.", an accented letter) cannot be spelled reliably and is dropped and counted.

Usage (once; the output is committed, so users never run this):
    cd /tmp && apt-get download r-cran-janeaustenr && dpkg -x r-cran-janeaustenr_*.deb jane
    pip install rdata
    python tools/make_austen_text.py /tmp/jane/usr/lib/R/site-library/janeaustenr/data \\
        asr_kd/data/texts/austen.tsv.gz
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import zlib
from collections import Counter
from pathlib import Path

import rdata

# Variable name in janeaustenr -> the book name written in the TSV.
BOOKS = {
    "sensesensibility": "sense_and_sensibility",
    "prideprejudice": "pride_and_prejudice",
    "mansfieldpark": "mansfield_park",
    "emma": "emma",
    "northangerabbey": "northanger_abbey",
    "persuasion": "persuasion",
}
_ABBREVIATIONS = {"MR": "MISTER", "MRS": "MISSUS", "DR": "DOCTOR", "ST": "SAINT"}
_HEADING = re.compile(r"^(CHAPTER|VOLUME)\b|^(by Jane Austen|\(\d{4}\))$|^[A-Z ]+$")
# A sentence ends at . ! or ? (possibly followed by closing quotes/brackets) before a space,
# unless the word before the dot is an abbreviation we spell out.
_END = re.compile(r"(?<!\bMr)(?<!\bMrs)(?<!\bDr)(?<!\bSt)[.!?]+[\"'\u201d\u2019)]*\s+")
_ALLOWED = re.compile(r"[A-Z' ]+")


def read_rdb(data_dir: Path) -> dict[str, list[str]]:
    """The package's data objects: book variable -> its text lines (one per printed line)."""
    index = rdata.conversion.convert(
        rdata.parser.parse_data(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))
    )
    blob = (data_dir / "Rdata.rdb").read_bytes()
    books = {}
    for name, (offset, length) in index["variables"].items():
        record = blob[int(offset) : int(offset) + int(length)]
        # A record is a 4-byte big-endian length, then a zlib stream of the serialised object.
        books[str(name)] = [
            str(line)
            for line in rdata.conversion.convert(
                rdata.parser.parse_data(zlib.decompress(record[4:]))
            )
        ]
    return books


def paragraphs(lines: list[str]) -> list[str]:
    """Blank-line separated paragraphs, headings (title, CHAPTER n, VOLUME n) left out."""
    out, current = [], []
    for line in [*lines, ""]:
        line = line.strip()
        if line:
            current.append(line)
            continue
        text = " ".join(current)
        current = []
        if text and not _HEADING.match(text):
            out.append(text)
    return out


def normalise(sentence: str) -> str | None:
    """LibriSpeech-style text of one sentence, or None when it cannot be spelled."""
    text = sentence.replace("\u2019", "'").replace("\u2018", "'").replace("_", "")
    text = re.sub(r"\b(Mrs?|Dr|St)\.", lambda m: _ABBREVIATIONS[m.group(1).upper()], text)
    text = re.sub(r"--+|-", " ", text)
    text = re.sub(r"[\"\u201c\u201d.,;:!?()\[\]]", " ", text).upper()
    # Apostrophes are kept inside words only (DON'T, EMMA'S), not as quotation marks.
    text = " ".join(w.strip("'") for w in text.split())
    text = " ".join(text.split())
    if not text or not _ALLOWED.fullmatch(text):
        return None
    return text


def sentences(paragraph: str) -> list[str]:
    return [s for s in _END.split(paragraph + " ") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="janeaustenr's data/ (Rdata.rdx, Rdata.rdb)")
    parser.add_argument("out", type=Path, help="the .tsv.gz to write")
    args = parser.parse_args(argv)
    books = read_rdb(args.data_dir)
    if set(books) != set(BOOKS):
        print(
            f"error: {args.data_dir} holds {sorted(books)}, expected {sorted(BOOKS)}",
            file=sys.stderr,
        )
        return 2
    kept, dropped = Counter(), Counter()
    rows = []
    for variable, book in BOOKS.items():
        for paragraph in paragraphs(books[variable]):
            for sentence in sentences(paragraph):
                text = normalise(sentence)
                if text is None:
                    dropped[book] += 1
                else:
                    kept[book] += 1
                    rows.append(f"{book}\t{text}\n")
    header = (
        "# Jane Austen's six novels (Project Gutenberg texts, public domain), from the R package\n"
        "# janeaustenr 1.0.0 (Julia Silge, MIT licence; Debian r-cran-janeaustenr), one sentence\n"
        "# a line, LibriSpeech-normalised: book<TAB>SENTENCE. Written by tools/make_austen_text.py;\n"
        f"# kept {sum(kept.values())} sentences, dropped {sum(dropped.values())} that held digits or\n"
        "# other characters that cannot be spelled.\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same input gives a byte-identical file.
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write((header + "".join(rows)).encode())
    for book in BOOKS.values():
        print(f"{book:24s} kept {kept[book]:6d}  dropped {dropped[book]:4d}")
    print(f"{args.out}: {sum(kept.values())} sentences, {sum(dropped.values())} dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
