"""Blue-green releases on PostgreSQL: build beside production, swap in one transaction.

A release builds every schema of the project under a green name (`analytics_marts__green`,
...; macro `generate_schema_name` appends ``$MEDIAPULSE_SCHEMA_SUFFIX``), after copying the
live snapshot tables there so the snapshots continue their history. When every step passed, one
transaction drops the old previous release, renames each live schema to `<name>__previous` and
each green one to `<name>`. A failed release drops green: production is never touched.

Why the swap locks every live relation first: renaming a schema takes no lock a reader waits
for, so without them a statement could resolve one schema's name before the commit and
another's after it, and read two releases at once. With them, a reader's first reference
waits for the commit and then resolves every name afresh. Views are locked with a no-op
``alter view ... owner to <its owner>``: ``lock table`` on a view would also lock the raw
tables it reads (the loader's, which the release may not lock). Each attempt waits for its
locks at most half a second (``set local lock_timeout``), then rolls back and tries again, up
to ``$MEDIAPULSE_SWAP_LOCK_TIMEOUT`` seconds: a swap that cannot take its locks gives up with
both releases intact, and a reader is never chosen as the victim of a deadlock with it.

PostgreSQL binds views to objects, not names, so the views built in green keep reading
green's objects once renamed, and the previous release's views keep reading its own.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from mediapulse import artifacts
from mediapulse.errors import MediaPulseError
from mediapulse.project import Project
from mediapulse.runner import DbtRun, run_dbt

SUFFIX_ENV = "MEDIAPULSE_SCHEMA_SUFFIX"
GREEN = "__green"
PREVIOUS = "__previous"
LOCK_TIMEOUT_ENV = "MEDIAPULSE_SWAP_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 5.0
ATTEMPT_LOCK_TIMEOUT_S = 0.5
STAMP_TABLE = "_mediapulse_release"
BUILT_KINDS = ("model", "seed", "snapshot")
_TABLE_KINDS = ("r", "p", "m", "f")


def lock_timeout_s() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise MediaPulseError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _seconds(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class PgRelease:
    project: Project
    target: str

    @property
    def env(self) -> dict[str, str]:
        """Make dbt name every schema of the project green."""
        return {SUFFIX_ENV: GREEN}

    @property
    def base_schema(self) -> str:
        from mediapulse.rawload import target_credentials

        return str(target_credentials(self.project, self.target).schema)

    def connect(self):  # type: ignore[no-untyped-def]
        from mediapulse.rawload import connect_postgres

        return connect_postgres(self.project, self.target)

    def parse(
        self, env: dict[str, str], keep_incremental: bool = False
    ) -> tuple[DbtRun, list[str], list[tuple[str, str]]]:
        """`dbt parse` with green names (``env``: the release's environment, with `self.env`):
        (the run, the release's live schema names, the live tables green starts from as (live
        schema, table)): the snapshots, whose history continues, and with ``keep_incremental``
        (a refresh) the incremental models too."""
        run = run_dbt(self.project, ["parse"], target=self.target, extra_env=env)
        if not run.success:
            return run, [], []
        manifest = artifacts.load_json(self.project.target_dir / "manifest.json", "manifest")
        schemas: set[str] = set()
        snapshots: list[tuple[str, str]] = []
        root = manifest["metadata"]["project_name"]
        for node in manifest["nodes"].values():
            # what the release builds: the project's own nodes (a plain `dbt build` leaves
            # dbt-project-evaluator's models to `mediapulse evaluate`, selectors.yml)
            if node["resource_type"] not in BUILT_KINDS or node["package_name"] != root:
                continue
            if node["fqn"][1:2] == ["monitoring"]:
                continue  # the run history's models: built by `mediapulse report`, not released
            schema = node["schema"]
            if not schema.endswith(GREEN):
                raise MediaPulseError(
                    f"{node['unique_id']} builds in schema {schema}, not a green one: macro "
                    f"generate_schema_name must append ${SUFFIX_ENV} to every schema"
                )
            live = schema.removesuffix(GREEN)
            schemas.add(live)
            incremental = node["config"].get("materialized") == "incremental"
            if node["resource_type"] == "snapshot" or (keep_incremental and incremental):
                snapshots.append((live, node.get("alias") or node["name"]))
        return run, sorted(schemas), sorted(snapshots)

    def prepare(self, schemas: list[str], snapshots: list[tuple[str, str]]) -> tuple[int, int]:
        """A clean green release that starts from copies of live's ``snapshots`` (and, on a
        refresh, incremental tables). Returns (tables copied, their bytes)."""
        self.discard(schemas)  # a crashed release's leftovers
        con = self.connect()
        copied = size = 0
        try:
            with con.cursor() as cursor:
                for schema, table in snapshots:
                    live, green = f"{_ident(schema)}.{_ident(table)}", _ident(schema + GREEN)
                    cursor.execute("select to_regclass(%s)", [f"{live}"])
                    if cursor.fetchone()[0] is None:
                        continue  # a first release, or a new table: dbt starts it
                    cursor.execute(f"create schema if not exists {green}")
                    copy = f"{green}.{_ident(table)}"
                    cursor.execute(f"create table {copy} (like {live} including all)")
                    cursor.execute(f"insert into {copy} select * from {live}")
                    cursor.execute("select pg_total_relation_size(%s::regclass)", [copy])
                    copied, size = copied + 1, size + int(cursor.fetchone()[0])
            con.commit()
        finally:
            con.close()
        return copied, size

    def discard(self, schemas: list[str]) -> None:
        """Drop the green schemas of ``schemas`` (and only those)."""
        con = self.connect()
        try:
            with con.cursor() as cursor:
                for schema in schemas:
                    cursor.execute(f"drop schema if exists {_ident(schema + GREEN)} cascade")
            con.commit()
        finally:
            con.close()

    def _stamped(self, cursor, suffix: str) -> list[str]:  # type: ignore[no-untyped-def]
        """Schemas of this target's releases that carry a release stamp, by live name."""
        cursor.execute(
            "select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where c.relname = %s and c.relkind = 'r' order by 1",
            [STAMP_TABLE],
        )
        base, found = self.base_schema, []
        for (name,) in cursor.fetchall():
            plain = name.removesuffix(suffix) if suffix else name
            if suffix and not name.endswith(suffix):
                continue
            if not suffix and name.endswith((GREEN, PREVIOUS)):
                continue
            if plain == base or plain.startswith(base + "_"):
                found.append(plain)
        return found

    def live_schemas(self) -> list[str]:
        con = self.connect()
        try:
            with con.cursor() as cursor:
                return self._stamped(cursor, "")
        finally:
            con.close()

    def release_id(self, suffix: str = "") -> str | None:
        """The release id the (live, or ``suffix``) marts-side schemas carry; None if none."""
        con = self.connect()
        try:
            with con.cursor() as cursor:
                schemas = self._stamped(cursor, suffix)
                if not schemas:
                    return None
                cursor.execute(
                    f"select release_id from {_ident(schemas[0] + suffix)}.{STAMP_TABLE}"
                )
                return str(cursor.fetchone()[0])
        finally:
            con.close()

    def publish(self, schemas: list[str], release_id: str, keep_previous: bool = False) -> float:
        """Stamp green, give it live's schema grants, swap it in. Returns the swap's seconds."""
        import psycopg2

        con = self.connect()
        try:
            with con.cursor() as cursor:
                for schema in schemas:
                    green = _ident(schema + GREEN)
                    cursor.execute(f"create schema if not exists {green}")
                    cursor.execute(
                        f"create table {green}.{STAMP_TABLE} as select %s::text as release_id, "
                        "now() as published_at",
                        [release_id],
                    )
                    copy_schema_grants(cursor, schema, schema + GREEN)
            con.commit()
        except psycopg2.Error as exc:
            con.rollback()
            raise MediaPulseError(
                f"cannot stamp the green schemas of release {release_id} on target "
                f"'{self.target}': {_first_line(exc)}; production left as it was"
            ) from None
        finally:
            con.close()
        return self.swap(schemas, release_id, keep_previous)

    def swap(self, schemas: list[str], release_id: str, keep_previous: bool = False) -> float:
        """In one transaction: drop `<s>__previous`, `<s>` becomes `<s>__previous`, `<s>__green`
        becomes `<s>`. A live schema of the replaced release that this one no longer has
        becomes previous too. With ``keep_previous`` (a refresh), a live schema that has a
        previous one is dropped instead, and the previous kept. Returns the seconds the
        transaction took."""
        renames: list[tuple[str, str]] = []
        drops: list[str] = []
        con = self.connect()
        try:
            with con.cursor() as cursor:
                existing = _existing(cursor)
                retired = [s for s in self._stamped(cursor, "") if s not in schemas]
                for schema in [*schemas, *retired]:
                    if keep_previous and schema + PREVIOUS in existing:
                        if schema in existing:
                            drops.append(schema)
                        continue
                    if schema + PREVIOUS in existing:
                        drops.append(schema + PREVIOUS)
                    if schema in existing:
                        renames.append((schema, schema + PREVIOUS))
                renames += [(schema + GREEN, schema) for schema in schemas]
            con.rollback()
            locked = [s for s in [*schemas, *retired] if s in existing]
            return self._transaction(con, locked, drops, renames, f"release {release_id}")
        finally:
            con.close()

    def _transaction(
        self,
        con,  # type: ignore[no-untyped-def]
        locked: list[str],
        drops: list[str],
        renames: list[tuple[str, str]],
        what: str,
    ) -> float:
        """Lock, drop, rename, commit, as one transaction, retried until the lock timeout.

        Each attempt waits at most ATTEMPT_LOCK_TIMEOUT_S for a lock (`set local lock_timeout`),
        less than PostgreSQL's deadlock_timeout (1 s by default): a reader that holds one
        relation of the release and waits for another the swap holds is let through by the
        swap giving up, never aborted as a deadlock victim. Returns the successful attempt's
        seconds."""
        import psycopg2

        timeout = lock_timeout_s()
        deadline = time.monotonic() + timeout
        attempt_ms = int(min(ATTEMPT_LOCK_TIMEOUT_S, timeout) * 1000)
        while True:
            started = time.perf_counter()
            try:
                with con.cursor() as cursor:
                    cursor.execute(f"set local lock_timeout = '{attempt_ms}ms'")
                    _lock_schemas(cursor, locked)
                    for schema in drops:
                        cursor.execute(f"drop schema {_ident(schema)} cascade")
                    for old, new in renames:
                        cursor.execute(f"alter schema {_ident(old)} rename to {_ident(new)}")
                con.commit()
                return time.perf_counter() - started
            except (psycopg2.errors.LockNotAvailable, psycopg2.errors.DeadlockDetected):
                con.rollback()
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
            except psycopg2.Error as exc:
                con.rollback()
                raise MediaPulseError(
                    f"swap of {what} on target '{self.target}' failed: {_first_line(exc)}; "
                    "rolled back, both releases left as they were"
                ) from None
            except BaseException:
                con.rollback()
                raise
        raise MediaPulseError(
            f"swap of {what} on target '{self.target}' could not take its locks within "
            f"{_seconds(timeout)} s (another session holds a lock on a production relation, "
            "e.g. an open transaction that read it): rolled back, both releases left as "
            f"they were; retry when it is done, or raise {LOCK_TIMEOUT_ENV}"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _existing(cursor) -> set[str]:  # type: ignore[no-untyped-def]
    cursor.execute("select nspname from pg_namespace")
    return {row[0] for row in cursor.fetchall()}


def _lock_schemas(cursor, schemas: list[str]) -> None:  # type: ignore[no-untyped-def]
    """ACCESS EXCLUSIVE on every relation of ``schemas``: a reader's next reference waits for
    the commit, then resolves its names in the new release."""
    if not schemas:
        return
    cursor.execute(
        "select format('%%I.%%I', n.nspname, c.relname), c.relkind, "
        "pg_get_userbyid(c.relowner) from pg_class c "
        "join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = any(%s) and c.relkind in ('r', 'p', 'm', 'f', 'v') order by 1",
        [schemas],
    )
    rows = cursor.fetchall()
    tables = [name for name, kind, _ in rows if kind in _TABLE_KINDS]
    if tables:
        cursor.execute(f"lock table {', '.join(tables)} in access exclusive mode")
    for name, kind, owner in rows:
        if kind == "v":  # a no-op that takes the view's lock alone, not its sources'
            cursor.execute(f"alter view {name} owner to {_ident(owner)}")


def copy_schema_grants(cursor, source: str, destination: str) -> int:  # type: ignore[no-untyped-def]
    """Grant on schema ``destination`` what schema ``source`` grants (USAGE, CREATE, to whom,
    with grant option or not): the green schemas are new, live's grants must not be lost in
    the swap. Returns the number of grants copied; none when ``source`` does not exist."""
    cursor.execute(
        "select case when a.grantee = 0 then 'public' else quote_ident(r.rolname) end, "
        "a.privilege_type, a.is_grantable from pg_namespace n "
        "cross join lateral aclexplode(n.nspacl) a "
        "left join pg_roles r on r.oid = a.grantee "
        "where n.nspname = %s and a.grantee <> n.nspowner",
        [source],
    )
    grants = cursor.fetchall()
    for grantee, privilege, grantable in grants:
        cursor.execute(
            f"grant {privilege} on schema {_ident(destination)} to {grantee}"
            + (" with grant option" if grantable else "")
        )
    return len(grants)


def rename_in_state(state: Path) -> None:
    """The artifacts of a green build name green schemas (those it built, and those it would
    store test failures in); once swapped, those are live's names, and slim CI defers to the
    names the state holds."""
    green_name = re.compile(r"\b(\w+?)" + GREEN + r"\b")
    for path in state.iterdir():
        if path.is_file() and path.suffix == ".json":
            path.write_text(green_name.sub(r"\1", path.read_text()))


def rollback(project: Project, target: str, state_dir: Path) -> str:
    """Put the previous release back in the live one's place, in one transaction (the live one
    is dropped), and the state that describes it. Returns the release now live."""
    from mediapulse.release import PREVIOUS as PREVIOUS_STATE
    from mediapulse.release import _replace_dir, published_state

    release = PgRelease(project, target)
    con = release.connect()
    try:
        with con.cursor() as cursor:
            live, previous = release._stamped(cursor, ""), release._stamped(cursor, PREVIOUS)
        con.rollback()
        if not previous:
            raise MediaPulseError(
                f"nothing to roll back to: target '{target}' has no previous release (no "
                f"{release.base_schema}*{PREVIOUS} schemas; each release keeps the one it "
                "replaced, the first release has none)"
            )
        previous_state = state_dir / PREVIOUS_STATE
        kept = published_state(previous_state)
        if kept is None:
            raise MediaPulseError(
                f"nothing to roll back to: no previous production state in {previous_state}; "
                "pass --artifacts the directory the last release published its state to"
            )
        in_db = release.release_id(PREVIOUS)
        if kept["release_id"] and in_db and kept["release_id"] != in_db:
            raise MediaPulseError(
                f"the previous schemas of target '{target}' are release {in_db} but "
                f"{previous_state} describes release {kept['release_id']}: they are not the "
                "same release; restore the matching production state, then retry"
            )
        # Like the DuckDB rollback: the previous release takes the live one's place, the
        # rolled-back release goes (its state too), and nothing is left to roll back to.
        renames = [(s + PREVIOUS, s) for s in previous]
        release._transaction(
            con, live + [s + PREVIOUS for s in previous], live, renames, f"rollback to {in_db}"
        )
    finally:
        con.close()
    staged = state_dir.with_name(state_dir.name + ".rollback")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(previous_state, staged)
    _replace_dir(staged, state_dir)
    return in_db or kept["release_id"] or f"built {kept['built_at']}"
