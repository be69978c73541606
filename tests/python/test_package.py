"""The package's shape: rooms a newcomer can read from the folder names, and imports that say
what depends on what. The rooms' order and the absence of cycles are import-linter's contracts
([tool.importlinter] in pyproject.toml, run by `make lint`); what it cannot see is here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.reads("scripts")

PACKAGE = REPO / "scripts" / "mediapulse"
TESTS = REPO / "tests" / "python"
# The CLI loads a command's room only when that command runs: `mediapulse --help` starts in a
# tenth of a second instead of the most of one that importing dbt, DuckDB and every room takes.
DEFERRING = {"cli"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_hides_an_import_of_the_package_inside_a_function() -> None:
    """A function-local import of our own modules hides a dependency (and once hid three
    cycles); only the CLI defers its rooms, for start-up time."""
    hidden = []
    for path in _modules():
        room = path.relative_to(PACKAGE).parts[0]
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in top:
                continue
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                a.name for a in node.names]  # fmt: skip
            ours = any(n == "mediapulse" or n.startswith("mediapulse.") for n in names)
            in_type_block = any(
                isinstance(parent, ast.If) and "TYPE_CHECKING" in ast.unparse(parent.test)
                and node in ast.walk(parent)
                for parent in tree.body
            )  # fmt: skip
            if ours and room not in DEFERRING and not in_type_block:
                hidden.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not hidden, "import these at the top of the module: " + ", ".join(hidden)


def test_every_room_is_a_package_with_a_docstring_and_no_module_sits_outside_one() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert not loose, f"put these modules in a room (a subpackage): {loose}"
    for room in (p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        init = room / "__init__.py"
        assert init.is_file(), f"{room.relative_to(REPO)} has no __init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} says nothing of its room"


def test_tests_mirror_the_package() -> None:
    """A module's tests are found by its path: tests/python/<room>/test_<module>.py. Test
    folders are the package's rooms, the dbt project's (project/, workflows/) and support/."""
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    allowed = rooms | {"project", "workflows", "support"}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= allowed, f"test folders that match no room: {sorted(folders - allowed)}"
    for folder in folders & rooms:
        for test in (TESTS / folder).glob("test_*.py"):
            assert (test.parent / "__init__.py").is_file()
    whole = {"test_package.py", "test_function_length.py"}  # of the package as a whole
    loose = [p.name for p in TESTS.glob("test_*.py") if p.name not in whole]
    assert not loose, f"move these into the folder of the room they test: {loose}"
