"""DuckDB files and the memory of the process that wrote them (core/freed_memory.py).

DuckDB writes a string segment's block whole, gap included, and the gap holds whatever the
allocator left there (duckdb/duckdb#23382). Each test runs a fresh Python, the way a job's
command starts: a table of e-mail-like values is made and dropped (freed), then tables whose
string segments leave such gaps are written and saved, and the file's bytes are searched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mediapulse.core import freed_memory
from mediapulse.core.freed_memory import ENV, OPTION, wipe_freed_memory

from ..conftest import REPO

pytestmark = pytest.mark.reads("scripts/mediapulse")

ADDRESS = re.compile(rb"person\d+@mail\.example")

# Segments of 12,000 to 15,000 md5 strings: FSST fills 80 to 100 % of a block, which DuckDB
# then writes without closing the gap. Before each save, 200,000 addresses are freed.
WRITE = """
import sys
path = sys.argv[1]
con = duckdb.connect(path, config={"threads": 1})
for i, n in enumerate(range(12000, 15000, 100)):
    con.execute(f"create table t{i} as select md5(range::varchar) as s from range({n})")
    con.execute("create temp table people as select 'person' || range || '@mail.example' "
                "as email from range(200000)")
    con.execute("drop table people")
    con.execute("checkpoint")
con.close()
"""


def _write(tmp_path: Path, first: str, env: dict[str, str] | None = None) -> int:
    """A fresh interpreter runs ``first`` then WRITE; the addresses its file holds."""
    path = tmp_path / "written.duckdb"
    path.unlink(missing_ok=True)
    environ = {k: v for k, v in os.environ.items() if k != ENV}
    environ.update(env or {})
    environ["PYTHONPATH"] = str(REPO / "scripts")
    subprocess.run([sys.executable, "-c", first + WRITE, str(path)], env=environ,
                   check=True, timeout=120)  # fmt: skip
    return len(ADDRESS.findall(path.read_bytes()))


def test_duckdb_alone_writes_freed_personal_data_into_its_file(tmp_path: Path) -> None:
    """Why the setting exists: plain DuckDB, as a script or a scheduler would load it, saves
    addresses it had freed (DuckDB 1.5.6: 647 to 5,877 in twenty runs of one interpreter;
    with 15 tables instead of 30, one run in ten saved none, hence up to three)."""
    assert any(_write(tmp_path, "import duckdb\n") > 0 for _ in range(3))


def test_a_process_that_imports_mediapulse_first_writes_none(tmp_path: Path) -> None:
    """What every `mediapulse` command and every process it starts does (the package sets
    the variable as it loads). Failed before: the same thousands as DuckDB alone."""
    assert _write(tmp_path, "import mediapulse\nimport duckdb\n") == 0
    # a user's own jemalloc options stay, and ours still wins over a `junk` of theirs
    assert _write(tmp_path, "import mediapulse\nimport duckdb\n",
                  {ENV: "junk:false,dirty_decay_ms:0"}) == 0  # fmt: skip


def test_the_setting_keeps_the_users_options_and_comes_last() -> None:
    for before, after in [
        ({}, OPTION),
        ({ENV: "dirty_decay_ms:0"}, f"dirty_decay_ms:0,{OPTION}"),
        ({ENV: "junk:false"}, f"junk:false,{OPTION}"),
        ({ENV: "junk:true"}, "junk:true"),
        ({ENV: f"abort_conf:true,{OPTION}"}, f"abort_conf:true,{OPTION}"),
    ]:
        environ = dict(before)
        wipe_freed_memory(environ)
        assert environ[ENV] == after, before


def test_this_process_wipes_freed_memory() -> None:
    """The test session itself (its conftest imports mediapulse before duckdb), which builds
    warehouses in-process: jemalloc's own answer, not the variable's."""
    assert freed_memory.junk_option() == "free"
    freed_memory.require_wiped("write a file")


def test_a_process_that_loaded_duckdb_first_refuses_to_write(tmp_path: Path) -> None:
    """DuckDB loaded before the variable (a script that imports duckdb, then mediapulse):
    jemalloc has read its options already, so the check refuses, in one line naming the
    variable, rather than write a file that could carry freed data."""
    environ = {k: v for k, v in os.environ.items() if k != ENV}
    environ["PYTHONPATH"] = str(REPO / "scripts")
    script = (
        "import duckdb\n"
        "from mediapulse.core.errors import MediaPulseError\n"
        "from mediapulse.core.freed_memory import require_wiped\n"
        "try:\n"
        "    require_wiped('stamp prod.duckdb')\n"
        "except MediaPulseError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True,
                            text=True, check=True, timeout=60)  # fmt: skip
    line = result.stdout.strip()
    assert line.startswith("cannot stamp prod.duckdb: DuckDB was loaded before "), line
    assert f"{ENV}={OPTION}" in line and "opt.junk is 'false'" in line and "\n" not in line
