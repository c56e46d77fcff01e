"""Imports go one way along the data flow (DESIGN.md, "Layout"), and nothing imports a command.

Every ``import`` of an ``asr_kd`` module, at module level or inside a function, is read from the
source with ``ast`` (no module is imported), so a lazy import cannot hide a wrong direction.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "asr_kd"

# Lowest first: a module may import its own layer (without cycles) and the layers above it in
# this list, never one below. ``asr_kd.cli`` is the leaf: imported by nothing (but its own private
# helpers, ``asr_kd.cli._command``, by the commands).
LAYERS = [
    (
        "base",
        [
            "asr_kd",
            "asr_kd.checkpoint",
            "asr_kd.errors",
            "asr_kd.schemas",
            "asr_kd.config",
            "asr_kd.metrics",
        ],
    ),
    ("data", ["asr_kd.data"]),
    ("models", ["asr_kd.models"]),
    ("distill", ["asr_kd.distill"]),
    ("training", ["asr_kd.training"]),
    ("inference", ["asr_kd.inference"]),
    ("export", ["asr_kd.export"]),
    ("evaluation", ["asr_kd.evaluation"]),
    ("cli", ["asr_kd.cli"]),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    """Index in LAYERS of the longest prefix that names ``module`` (``asr_kd`` alone: base)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact_root = prefix == "asr_kd" and module == "asr_kd"
            inside = prefix != "asr_kd" and (module == prefix or module.startswith(prefix + "."))
            if (exact_root or inside) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")
    return best


def _imports(path: Path, module: str) -> set[str]:
    """``asr_kd`` modules imported anywhere in ``path`` (``from asr_kd.x import y`` counts as
    ``asr_kd.x.y`` when that is a module, else ``asr_kd.x``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "asr_kd")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "asr_kd":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    found.discard(module)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: _imports(p, m) for m, p in MODULES.items()}


def _helper_of(module: str, target: str) -> bool:
    """A command may use the commands' private helpers (``asr_kd.cli._command``: the one Hydra
    wrapper); nothing imports a command itself."""
    return module.startswith("asr_kd.cli.") and target.startswith("asr_kd.cli._")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_one_way(module):
    layer = _layer(module)
    wrong = sorted(
        f"{target} ({LAYERS[_layer(target)][0]})"
        for target in GRAPH[module]
        if _layer(target) > layer
        or (LAYERS[_layer(target)][0] == "cli" and not _helper_of(module, target))
    )
    assert not wrong, f"{module} ({LAYERS[layer][0]}) imports a later layer or a command: {wrong}"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if target not in MODULES:
                continue
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)


def test_the_checker_sees_lazy_imports_and_wrong_directions(tmp_path):
    """The rule itself: a function-level import of a later layer and of a command are caught."""
    source = tmp_path / "probe.py"
    source.write_text(
        "def f():\n    from asr_kd.training.task import AsrTask\n    import asr_kd.cli.train\n"
    )
    found = _imports(source, "asr_kd.data.probe")
    assert {"asr_kd.training.task", "asr_kd.cli.train"} <= found
    assert _layer("asr_kd.training.task") > _layer("asr_kd.data.probe")
    assert LAYERS[_layer("asr_kd.cli.train")][0] == "cli"
