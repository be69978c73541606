"""DuckDB files must not carry what the process that wrote them once held in memory.

DuckDB 1.5 stores a string column's segment in a 256 KiB block with its offsets at the front
and its strings at the back. When the segment is at least 80 % full, the block is written as
it is: the bytes between the two are whatever the allocator left there (duckdb/duckdb#23382,
open). In a production build that is the raw data the same process read, the accounts' names
and e-mail addresses among it; pull requests download production's file, so a release could
hand them personal data no table holds.

DuckDB allocates through jemalloc, which can overwrite memory as it is freed (``junk:free``):
memory handed out again then holds filler bytes, not old data. jemalloc reads its options
from ``DUCKDB_JE_MALLOC_CONF`` once, when DuckDB first allocates, so the variable must be set
before ``duckdb`` is imported. The package sets it as it loads (``mediapulse/__init__.py``),
so every command and every process it starts (dbt's, the orchestrators') runs with it;
`require_wiped` asks jemalloc itself (``mallctl("opt.junk")``) before a DuckDB file is
written for someone else to read.

Not covered: when DuckDB is short of memory it may evict a cached block and reuse its buffer
without freeing it, so a build that reaches its memory limit can still write old bytes into a
gap. docs/personal-data.md says so.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import MutableMapping
from functools import cache

from mediapulse.core.errors import MediaPulseError

ENV = "DUCKDB_JE_MALLOC_CONF"  # jemalloc's MALLOC_CONF under the prefix DuckDB builds it with
OPTION = "junk:free"
WIPED = {"free", "true"}  # opt.junk values that overwrite freed memory
# set by mediapulse.dbt.runner for a dbt child on DuckDB: the child checks before dbt runs
CHECK_ENV = "MEDIAPULSE_REQUIRE_WIPED_MEMORY"


def wipe_freed_memory(environ: MutableMapping[str, str]) -> None:
    """Ask, in ``environ``, for jemalloc to overwrite freed memory; the caller's own options
    stay, and ours comes last so that it wins over a ``junk`` of theirs."""
    conf = environ.get(ENV, "")
    options = [o for o in conf.split(",") if o.strip()]
    junk = [o.split(":", 1)[1] for o in options if o.startswith("junk:")]
    if junk and junk[-1] in WIPED:
        return
    environ[ENV] = ",".join([*options, OPTION])


@cache
def _mallctl() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """jemalloc's mallctl inside DuckDB's extension module, or None where DuckDB is built
    without jemalloc (macOS, Windows, 32-bit)."""
    try:
        import _duckdb  # DuckDB's compiled module: the library jemalloc is linked into

        function = ctypes.CDLL(_duckdb.__file__).duckdb_je_mallctl
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                         ctypes.c_void_p, ctypes.c_size_t]  # fmt: skip
    function.restype = ctypes.c_int
    return function


def junk_option() -> str | None:
    """This process's jemalloc ``opt.junk`` ("free", "true", "alloc" or "false"), or None when
    DuckDB here has no jemalloc."""
    mallctl = _mallctl()
    if mallctl is None:
        return None
    value = ctypes.c_char_p()
    size = ctypes.c_size_t(ctypes.sizeof(value))
    if mallctl(b"opt.junk", ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
        return None
    return (value.value or b"").decode()


def require_wiped(what: str) -> None:
    """Refuse to write ``what`` (a DuckDB file another job or a pull request reads) from a
    process whose DuckDB keeps freed memory as it was."""
    junk = junk_option()
    if junk in WIPED:
        return
    if junk is None:
        if sys.platform.startswith("linux"):
            raise MediaPulseError(
                f"cannot {what}: this DuckDB has no jemalloc to overwrite freed memory, so the "
                "file could carry bytes of data this process read (personal data among them); "
                "use DuckDB's Linux x86-64 or arm64 build from PyPI"
            )
        return  # a laptop's DuckDB: its files are not published (production runs on Linux)
    raise MediaPulseError(
        f"cannot {what}: DuckDB was loaded before {ENV} asked it to overwrite freed memory "
        f"(opt.junk is {junk!r}), so the file could carry bytes of data this process read "
        f"(personal data among them); run it through the `mediapulse` command, or set "
        f"{ENV}={os.environ.get(ENV) or OPTION} before Python starts"
    )
