"""Functions stay short: no function in ``geounet/`` has more than 60 lines of code.

A line of code is a line holding a token of code: blank lines, comment-only lines and
docstrings do not count; the ``def`` line, a multi-line signature and the body (nested
functions included) do. The walk reads every module with :mod:`ast` and :mod:`tokenize`.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "geounet"
MAX_CODE_LINES = 60

_NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}
_WITH_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _code_lines(source: str) -> set[int]:
    """Line numbers that hold at least one token of code (strings span all their lines)."""
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in _NOT_CODE:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers of every module, class and function docstring."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, _WITH_DOCSTRING) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def function_sizes(source: str) -> dict[str, int]:
    """``{"name:line": lines of code}`` for every function (and method) in ``source``."""
    tree = ast.parse(source)
    code = _code_lines(source) - _docstring_lines(tree)
    sizes = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            span = set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
            sizes[f"{node.name}:{node.lineno}"] = len(span & code)
    return sizes


def test_the_count_leaves_out_docstrings_comments_and_blank_lines():
    source = '''
def outer(
    a,
    b,
):
    """A docstring

    over several lines.
    """
    # a comment

    text = """a string
    that is code"""

    def inner():
        """Inner docstring."""
        return a  # trailing comment
    return inner, text
'''
    sizes = function_sizes(source)
    # outer: 4 signature lines, 2 lines of the string, def inner, return a, return inner
    assert sizes == {"outer:2": 9, "inner:15": 2}


def test_no_function_in_the_package_is_longer_than_60_lines_of_code():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        sizes = function_sizes(path.read_text(encoding="utf-8"))
        for where, n in sizes.items():
            if n > MAX_CODE_LINES:
                name, line = where.split(":")
                too_long.append(f"{path.relative_to(PACKAGE.parent)}:{line} {name}: {n} lines")
    assert not too_long, (
        f"functions over {MAX_CODE_LINES} lines of code (split them):\n" + "\n".join(too_long)
    )
