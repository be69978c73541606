"""One release at a time, whoever starts it.

GitHub's concurrency group keeps the workflows apart, but not a developer's `mediapulse
deploy`, an orchestrator's job or a second CI system. So every job that changes production
(`nightly`, `refresh`, `deploy`, `rollback`) holds a lock for its whole length, from before it
stages anything to after its state is published:

- DuckDB: an exclusive `flock` on ``<production file>.release-lock`` beside the production
  file; the holder writes who it is into it.
- PostgreSQL: a session-level advisory lock, keyed by the database and the production schema,
  held on a connection of its own whose `application_name` says who holds it.

Either is released by the operating system or the server when the holder dies (a `kill -9`, a
lost runner): a crashed job never blocks the next one. A second job waits up to
``$MEDIAPULSE_RELEASE_LOCK_WAIT`` seconds (default 300), printing a line every 30 s, then stops
with one line naming the running release; it never stages, builds or swaps meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError

WAIT_ENV = "MEDIAPULSE_RELEASE_LOCK_WAIT"
DEFAULT_WAIT_S = 300.0
PROGRESS_EVERY_S = 30.0
POLL_S = 0.5
# pg_try_advisory_lock(key1, key2): key1 says "a MediaPulse release", key2 which production
ADVISORY_CLASS = 0x4D50_5245  # "MPRE"
KEEPALIVES = (
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
    ("idle_session_timeout", "0"),  # the lock's session is idle by design
)


@dataclass(frozen=True)
class Holder:
    """Who holds the lock: enough for an operator to find the job."""

    job: str
    pid: int
    host: str
    started_at: str

    @classmethod
    def me(cls, job: str) -> Holder:
        return cls(job, os.getpid(), socket.gethostname(), datetime.now(UTC).isoformat())

    def describe(self) -> str:
        return f"{self.job} (pid {self.pid} on {self.host}, started {self.started_at})"

    def tag(self) -> str:
        """As a PostgreSQL application_name (at most 63 bytes)."""
        return f"mediapulse {self.job} pid {self.pid} {self.host}"[:63]


def wait_s() -> float:
    raw = os.environ.get(WAIT_ENV)
    if raw is None or raw == "":
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise MediaPulseError(f"{WAIT_ENV}={raw!r} is not a number of seconds (0: do not wait)")
    return value


def _acquire(try_once: Callable[[], bool], holder: Callable[[], str], what: str, job: str) -> None:
    """Take the lock, waiting up to wait_s(); raise naming the holder if it stays taken."""
    limit = wait_s()
    started = time.monotonic()
    next_line = started
    while not try_once():
        waited = time.monotonic() - started
        if waited >= limit:
            raise MediaPulseError(
                f"another release is running on {what}: {holder()}; {job} did not start "
                f"(waited {waited:.0f} s; production untouched by this job): run it again "
                f"when that one has finished, or set {WAIT_ENV}=SECONDS to wait longer"
            )
        if time.monotonic() >= next_line:
            print(
                f"waiting for the release lock on {what}: {holder()} is running "
                f"(waited {waited:.0f} s of at most {limit:.0f} s)",
                flush=True,
            )
            next_line += PROGRESS_EVERY_S
        time.sleep(min(POLL_S, max(limit - waited, 0.01)))


@contextlib.contextmanager
def file_lock(path: Path, job: str) -> Iterator[Holder]:
    """The DuckDB production's lock: ``path`` (created if missing) held with flock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = Holder.me(job)
    handle = path.open("a+")
    try:

        def try_once() -> bool:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        def holder() -> str:
            try:
                return Holder(**json.loads(path.read_text())).describe()
            except (OSError, ValueError, TypeError):
                return f"a job holding {path}"

        _acquire(try_once, holder, f"production {path.name.split('.')[0]} ({path})", job)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(me.__dict__) + "\n")
        handle.flush()
        yield me
    finally:
        handle.close()  # closing the file releases the flock (so does dying)


def advisory_key(database: str, schema: str) -> int:
    """A stable signed 32-bit key for one production (database and schema)."""
    value = zlib.crc32(f"{database}/{schema}".encode())
    return value - 2**32 if value >= 2**31 else value


@contextlib.contextmanager
def advisory_lock(
    connect: Callable[[str], Any], database: str, schema: str, job: str
) -> Iterator[Any]:
    """PostgreSQL's lock: ``connect(application_name)`` opens the connection that holds it for
    the job's length; yields that connection (``still_held`` checks it before a swap)."""
    me = Holder.me(job)
    key = advisory_key(database, schema)
    con = connect(me.tag())
    con.autocommit = True
    try:
        with con.cursor() as cursor:
            # a runner that vanishes (no FIN, no RST) must not hold the lock for the two hours
            # of the operating system's default keepalive: the server probes the idle session
            # and ends it (releasing the lock) about a minute after the runner is gone
            for setting, value in KEEPALIVES:
                cursor.execute("select pg_catalog.set_config(%s, %s, false)", [setting, value])

        def try_once() -> bool:
            with con.cursor() as cursor:
                cursor.execute(
                    "select pg_catalog.pg_try_advisory_lock(%s, %s)", [ADVISORY_CLASS, key]
                )
                return bool(cursor.fetchone()[0])

        def holder() -> str:
            with con.cursor() as cursor:
                cursor.execute(
                    "select a.application_name, a.usename, a.pid, a.backend_start, "
                    "a.client_addr from pg_catalog.pg_locks l "
                    "join pg_catalog.pg_stat_activity a on a.pid = l.pid "
                    "where l.locktype = 'advisory' and l.granted and l.classid = %s "
                    "and l.objid = %s and l.objsubid = 2",
                    [ADVISORY_CLASS & 0xFFFFFFFF, key & 0xFFFFFFFF],
                )
                row = cursor.fetchone()
            if row is None:
                return "a session that has just let go"
            name, user, pid, since, client = row
            return (
                f"{name or 'an unnamed session'} (role {user}, server pid {pid}, "
                f"from {client or 'a local socket'}, connected {since:%Y-%m-%d %H:%M:%S %Z})"
            )

        _acquire(try_once, holder, f"production {schema} in database {database}", job)
        yield con
    finally:
        con.close()  # ends the session: the server releases its advisory locks


def still_held(con: Any, database: str, schema: str) -> None:
    """Before a swap: the lock's session is alive and holds it (a server that dropped the idle
    session would let another job in), else one line and nothing is swapped."""
    key = advisory_key(database, schema)
    try:
        with con.cursor() as cursor:
            cursor.execute(
                "select count(*) from pg_catalog.pg_locks where pid = pg_catalog.pg_backend_pid() "
                "and locktype = 'advisory' and granted and classid = %s and objid = %s",
                [ADVISORY_CLASS & 0xFFFFFFFF, key & 0xFFFFFFFF],
            )
            held = cursor.fetchone()[0] > 0
    except Exception as exc:  # the session is gone: psycopg2's errors, whatever they are
        raise MediaPulseError(
            f"lost the release lock on production {schema} ({str(exc).strip().splitlines()[0]}): "
            "another job may have started; nothing was swapped, run the job again"
        ) from None
    if not held:
        raise MediaPulseError(
            f"lost the release lock on production {schema}: nothing was swapped, run the job again"
        )
