"""Rules for the test suite itself, read from the test files with :mod:`ast`.

- ``pytest.importorskip`` is for optional third-party packages only: a geounet module that
  fails to import is a failure, not a skip.
- A test that reads ``../shared/data`` (through ``shared_data()``, directly or through a
  fixture) carries ``@pytest.mark.realdata``. ``shared_data()`` also checks this at run time,
  but only for the test that first builds a module-scoped fixture; this check sees them all.
- A docstring example of geounet that is not run as a doctest (``# doctest: +SKIP``) says why,
  in the docstring, with the words "not run as a doctest".
"""

from __future__ import annotations

import ast
import doctest
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FILES = sorted(p for p in TESTS.glob("*.py") if p.name != Path(__file__).name)
PACKAGE = TESTS.parent / "geounet"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _calls(node: ast.AST, name: str) -> list[ast.Call]:
    """Calls of ``name(...)`` or ``<anything>.name(...)`` inside ``node``."""
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            func = sub.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called == name:
                found.append(sub)
    return found


def _marks(decorators: list[ast.expr]) -> set[str]:
    """Names of ``@pytest.mark.<name>`` decorators (called or not)."""
    names = set()
    for dec in decorators:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and "pytest.mark" in ast.unparse(target):
            names.add(target.attr)
    return names


def _module_marks(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return {m.split(".")[-1] for m in ast.unparse(node.value).replace("(", " ").split()}
    return set()


def _is_fixture(fn: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(d) for d in fn.decorator_list)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_importorskip_only_for_third_party_packages(path):
    for call in _calls(_tree(path), "importorskip"):
        module = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else ""
        assert not str(module).startswith("geounet"), (
            f"{path.name}:{call.lineno}: importorskip({module!r}) would turn a broken geounet "
            "module into a skip; import it normally."
        )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_tests_reading_shared_data_carry_the_realdata_marker(path):
    tree = _tree(path)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    readers = {fn.name for fn in functions if _calls(fn, "shared_data")}
    for fn in functions:  # fixtures built on fixtures that read the data read it too
        if _is_fixture(fn) and readers & {a.arg for a in fn.args.args}:
            readers.add(fn.name)
    module_marked = "realdata" in _module_marks(tree)
    for fn in functions:
        if not fn.name.startswith("test_") or module_marked:
            continue
        uses = fn.name in readers or readers & {a.arg for a in fn.args.args}
        if uses:
            assert "realdata" in _marks(fn.decorator_list), (
                f"{path.name}:{fn.lineno}: {fn.name} reads ../shared/data without "
                "@pytest.mark.realdata"
            )


def _skipped_without_reason(source: str) -> list[str]:
    """Names of the docstrings in ``source`` with skipped examples and no reason given."""
    parser, skip = doctest.DocTestParser(), doctest.OPTIONFLAGS_BY_NAME["SKIP"]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=False) or ""
        skipped = [e for e in parser.get_examples(doc) if e.options.get(skip)]
        if skipped and "not run as a doctest" not in doc.lower():
            found.append(getattr(node, "name", "module docstring"))
    return found


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_skipped_docstring_examples_say_why(path):
    missing = _skipped_without_reason(path.read_text())
    assert not missing, (
        f"{path}: {', '.join(missing)}: a '# doctest: +SKIP' example without a reason; add a "
        "line 'Not run as a doctest: <why>.' before it, or make it run offline."
    )


def test_the_rules_see_the_cases_they_forbid():
    """Control: the checks above do find what they look for."""
    bad = ast.parse(
        "import pytest\n"
        "@pytest.fixture\n"
        "def scene():\n"
        "    return shared_data('inria_austin')\n"
        "def test_a(scene):\n"
        "    pytest.importorskip('geounet.io.raster')\n"
        "@pytest.mark.realdata\n"
        "def test_b(scene):\n"
        "    pass\n"
    )
    functions = {n.name: n for n in bad.body if isinstance(n, ast.FunctionDef)}
    assert _is_fixture(functions["scene"]) and _calls(functions["scene"], "shared_data")
    assert _marks(functions["test_a"].decorator_list) == set()
    assert _marks(functions["test_b"].decorator_list) == {"realdata"}
    assert [c.args[0].value for c in _calls(bad, "importorskip")] == ["geounet.io.raster"]
    doc = '"""Example:\n    >>> run()  # doctest: +SKIP\n"""\n'
    assert _skipped_without_reason(doc) == ["module docstring"]
    assert _skipped_without_reason(doc.replace("Example:", "Not run as a doctest: x.")) == []
