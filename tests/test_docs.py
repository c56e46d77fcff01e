"""The documents keep up with the code: docs/internals.md's layer map lists exactly the package's
modules, in the layers of tests/test_layers.py; the README stays a short manual that names every
command; and every relative link in README.md and docs/*.md reaches a file and a heading."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
INTERNALS = ROOT / "docs" / "internals.md"
MAX_README_LINES = 400


def _layers_test_module():
    """tests/test_layers.py, loaded from its file (its ``LAYERS``, ``MODULES`` and ``_layer``)."""
    spec = importlib.util.spec_from_file_location(
        "_layers_for_docs", ROOT / "tests" / "test_layers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAYERS_TEST = _layers_test_module()


def _without_notes(text: str) -> str:
    """``a (x, y), b (z (w))`` -> ``a , b``: the parenthesised notes dropped, nested ones too."""
    while True:
        stripped = re.sub(r"\([^()]*\)", "", text)
        if stripped == text:
            return text
        text = stripped


def parse_layer_map(markdown: str) -> list[tuple[str, str, list[str]]]:
    """The fenced block under ``## Layers`` as ``[(layer, package, [module, ...]), ...]``, each
    module a full dotted name. A line ``<layer> <package> <modules>`` starts a layer; an indented
    line continues its module list."""
    _, found, section = markdown.partition("## Layers\n")
    block = re.search(r"```\n(.*?)```", section, re.S) if found else None
    assert block, "docs/internals.md: no fenced layer map under '## Layers'"
    rows: list[tuple[str, str, str]] = []
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            assert rows, f"a continuation line before any layer: {line!r}"
            layer, package, text = rows[-1]
            rows[-1] = (layer, package, f"{text} {line.strip()}")
        else:
            layer, package, text = (line.split(None, 2) + ["", ""])[:3]
            rows.append((layer, package, text))
    result = []
    for layer, package, text in rows:
        text = _without_notes(text)
        names = [name.strip() for name in text.split(",") if name.strip()]
        bad = [name for name in names if not re.fullmatch(r"[A-Za-z_][\w.]*", name)]
        assert not bad, f"layer {layer}: not module names {bad} (a note belongs in parentheses)"
        result.append((layer, package, [f"{package}.{name}" for name in names]))
    return result


def test_the_map_parser_reads_continuations_and_drops_notes():
    text = "## Layers\n\n```\nbase  asr_kd  config (x, y (z)),\n    errors\ncli  asr_kd.cli  train\n```\n"
    assert parse_layer_map(text) == [
        ("base", "asr_kd", ["asr_kd.config", "asr_kd.errors"]),
        ("cli", "asr_kd.cli", ["asr_kd.cli.train"]),
    ]


LAYER_MAP = parse_layer_map(INTERNALS.read_text())
LISTED = {package for _, package, _ in LAYER_MAP} | {m for _, _, ms in LAYER_MAP for m in ms}


def test_the_layer_map_lists_every_module():
    missing = sorted(set(LAYERS_TEST.MODULES) - LISTED)
    assert not missing, f"docs/internals.md's layer map lacks {missing}: add them under 'Layers'"


def test_the_layer_map_lists_no_module_that_is_gone():
    stale = sorted(LISTED - set(LAYERS_TEST.MODULES))
    assert not stale, f"docs/internals.md's layer map names {stale}, which asr_kd no longer has"


def test_the_layer_map_has_the_layers_of_test_layers_in_order():
    names = [name for name, _ in LAYERS_TEST.LAYERS]
    assert [layer for layer, _, _ in LAYER_MAP] == names


def test_each_module_sits_in_its_layer():
    """A module listed under one layer of the map sits in that layer of ``LAYERS`` (``asr_kd``
    in the package column of a later layer is only the prefix of its top-level modules)."""
    layers = [name for name, _ in LAYERS_TEST.LAYERS]
    wrong = [
        f"{module}: map {layer}, LAYERS {layers[LAYERS_TEST._layer(module)]}"
        for layer, package, modules in LAYER_MAP
        for module in ([] if package == "asr_kd" else [package]) + modules
        if module in LAYERS_TEST.MODULES and layers[LAYERS_TEST._layer(module)] != layer
    ]
    assert not wrong


def test_the_readme_is_a_short_manual():
    lines = README.read_text().count("\n")
    assert lines < MAX_README_LINES, (
        f"README.md has {lines} lines; keep it under {MAX_README_LINES}: "
        "move measurements to docs/results.md and details to docs/"
    )


def test_the_readme_names_every_command():
    # pyproject.toml's [project.scripts] table, read without tomllib (Python 3.11+).
    table = (ROOT / "pyproject.toml").read_text().split("[project.scripts]\n", 1)[1]
    scripts = re.findall(r"^([\w-]+) = ", table.split("\n[", 1)[0], re.M)
    assert scripts, "no [project.scripts] table in pyproject.toml"
    text = README.read_text()
    assert not [name for name in scripts if f"{name} " not in text]


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings (fenced code skipped; repeats get ``-1``, ...)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in re.sub(r"```.*?```", "", markdown, flags=re.S).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(markdown: str) -> list[str]:
    """Targets of ``[text](target)`` links outside code that are not URLs."""
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", markdown, flags=re.S))
    targets = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", prose)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_anchors_and_links_are_read_as_github_does():
    headings = "# A b\n## Export to ONNX / deployment\n```\n# not a heading\n```\n## A b\n"
    assert heading_anchors(headings) == {"a-b", "a-b-1", "export-to-onnx--deployment"}
    links = "[a](docs/x.md#y) [b](https://e.org) `[c](z.md)` [d](#top)\n```\n[e](f.md)\n```"
    assert relative_links(links) == ["docs/x.md#y", "#top"]


DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_a_heading(document):
    broken = []
    for target in relative_links(document.read_text()):
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        if not file.exists():
            broken.append(f"{target} (no file {file})")
        elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    assert not broken, f"{document.name}: broken links {broken}"
