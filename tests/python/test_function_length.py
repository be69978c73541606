"""Short functions: none in the package runs past MAX_LINES lines, so each reads on one screen
and its steps have names. Constant SQL text is exempt: its length is the query's, not logic's.
ruff's PLR0915 (`max-statements` in pyproject.toml) counts statements; this counts lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator

import pytest

from .conftest import REPO

pytestmark = pytest.mark.reads("scripts")

PACKAGE = REPO / "scripts" / "mediapulse"
MAX_LINES = 80

# Pending exemptions, only while they last (the last one, the argparse CLI's build_parser, went
# with the click CLI): an entry whose function is gone or short fails
# test_pending_exemptions_are_still_needed. Nothing may be added here.
PENDING: set[str] = set()

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(body: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, Function]]:
    """Every function and method with its qualified name (`Bench.floor`, `read.rows_of`)."""
    for node in body:
        if isinstance(node, Function):
            yield prefix + node.name, node
            yield from _functions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.If | ast.Try | ast.With):  # definitions under a guard
            for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                yield from _functions(block, prefix)


def _is_text(node: ast.expr | None) -> bool:
    """A string or f-string, or a list, tuple or dict (constant keys) of them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.List | ast.Tuple):
        return all(_is_text(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(isinstance(k, ast.Constant) for k in node.keys) and all(
            _is_text(v) for v in node.values
        )
    return False


def is_constant_text(function: Function) -> bool:
    """Constant SQL text (data/synthetic.py's *_sql): a docstring, a few one-line names for
    the values the text interpolates, and one `return` of the text. No control flow."""
    body = list(function.body)
    if body and isinstance(body[0], ast.Expr) and _is_text(body[0].value):
        body = body[1:]  # the docstring
    if not body or not isinstance(body[-1], ast.Return) or not _is_text(body[-1].value):
        return False
    return all(
        isinstance(s, ast.Assign)
        and all(isinstance(t, ast.Name) for t in s.targets)
        and s.lineno == s.end_lineno
        for s in body[:-1]
    )


def long_functions() -> dict[str, int]:
    """`room/module.py::qualified.name` -> lines (from `def` to its last line) of every
    function longer than MAX_LINES that is not constant text."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        module = path.relative_to(PACKAGE).as_posix()
        for name, node in _functions(ast.parse(path.read_text()).body):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES and not is_constant_text(node):
                found[f"{module}::{name}"] = lines
    return found


def test_no_function_is_longer_than_a_screen() -> None:
    long = {name: n for name, n in long_functions().items() if name not in PENDING}
    listed = "\n".join(f"  {name}: {n} lines" for name, n in sorted(long.items()))
    assert not long, (
        f"split these into named steps (at most {MAX_LINES} lines a function; constant SQL "
        f"text is exempt):\n{listed}"
    )


def test_pending_exemptions_are_still_needed() -> None:
    stale = sorted(PENDING - set(long_functions()))
    assert not stale, f"no longer long (or gone): remove them from PENDING: {stale}"


def test_constant_text_is_told_from_logic() -> None:
    def parse(source: str) -> Function:
        node = ast.parse(source).body[0]
        assert isinstance(node, Function)
        return node

    assert is_constant_text(parse('def q(n):\n    """Doc."""\n    m = n + 1\n    return f"{m}"'))
    assert is_constant_text(parse('def q():\n    return ["a", f"b", "c"]'))
    assert is_constant_text(parse('def q():\n    return {"t": f"select {1}"}'))
    assert not is_constant_text(parse('def q(n):\n    if n:\n        n += 1\n    return f"{n}"'))
    assert not is_constant_text(parse('def q(n):\n    print(n)\n    return "x"'))
    assert not is_constant_text(parse('def q(n):\n    return "x" + str(n)'))
    assert not is_constant_text(parse("def q(n):\n    return n"))
