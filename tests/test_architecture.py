"""The package's layers: every import goes to a layer above (or the same subpackage), no cycles.

The order lives here and in ``../shared/DESIGN.md``. A module may import from its own
subpackage and from the subpackages listed before its own; ``cli`` sits on top. The walk reads
every ``import`` statement with :mod:`ast`, also those inside functions (a lazy import is still
a dependency), and ignores those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geounet"

#: Top to bottom: each layer may import only from the layers before it (and from itself).
LAYERS = [
    "core",
    "io",
    "viz",
    "data",
    "vectorizing",
    "evaluation",
    "model",
    "inference",
    "app",
    "cli",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path) -> set[str]:
    """Every ``geounet`` module a file imports (``from geounet.x import y`` -> ``geounet.x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "geounet")
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "geounet"
        ):
            found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(LAYERS), "a new subpackage needs a place in LAYERS and DESIGN.md"
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not loose, f"modules outside the layers: {sorted(loose)}"


def test_imports_only_go_up_the_layers() -> None:
    wrong = []
    for module, imported in _graph().items():
        own = _layer(module)
        if own is None:  # geounet/__init__.py and __main__.py sit above everything
            continue
        for target in imported:
            layer = _layer(target)
            if layer is None:
                wrong.append(f"{module} imports the package root ({target})")
            elif LAYERS.index(layer) > LAYERS.index(own):
                wrong.append(f"{module} ({own}) imports {target} ({layer})")
    assert not wrong, "\n".join(wrong)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    graph = _graph()
    # a package's __init__ importing its own modules is how re-exports work: not a cycle edge
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    assert _find_cycle(edges) is None, " -> ".join(_find_cycle(edges) or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_walker_sees_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from geounet.app import classifier\n"
        "def f():\n    from geounet.io.raster import open_raster\n"
        "import geounet.core.errors\n"
    )
    assert _imports(src) == {"geounet.io.raster", "geounet.core.errors"}


@pytest.mark.parametrize(
    ("name", "kind"),
    [("vectorize", "function"), ("prepare_data", "function"), ("UnetClassifier", "class")],
)
def test_public_names_are_what_they_say(name: str, kind: str) -> None:
    import inspect

    import geounet
    import geounet.vectorizing.pipeline  # binding the subpackage must not shadow the function

    obj = getattr(geounet, name)
    assert inspect.isfunction(obj) if kind == "function" else inspect.isclass(obj), obj
