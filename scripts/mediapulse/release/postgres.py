"""Blue-green releases on PostgreSQL: build beside production, swap in one transaction.

A release builds every schema of the project under a green name (`analytics_marts__green`,
...; macro `generate_schema_name` appends ``$MEDIAPULSE_SCHEMA_SUFFIX``), after copying the
live snapshot tables there so the snapshots continue their history. When every step passed, one
transaction renames each live schema to its kept name `<name>__r<8 hex of its release id>`, each
green one to `<name>`, drops the kept releases beyond ``$MEDIAPULSE_KEEP_RELEASES``, and moves
the schema grants: the new live schemas grant USAGE to the roles their relations are granted
to (and whatever the replaced live schema granted besides), the kept ones to no one. A failed
release drops green: production is never touched. Every schema of a release carries
``_mediapulse_release`` (id, job, code, commit, and the names of all its schemas, so a kept
release that lost a schema is known to be incomplete); the first carries the state it
published (``_mediapulse_state``), so the warehouse can always say, and repair, which release
is live. Only schemas owned by the role that releases count: a schema another role created
with a stamp in it is not a release.

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
green's objects once renamed, and the kept releases' views keep reading their own.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mediapulse.core import failpoints
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.dbt.runner import DbtRun, run_dbt
from mediapulse.engines.postgres import connect_postgres, target_credentials
from mediapulse.engines.targets import resolve
from mediapulse.release.state import Stamp, keep_count, pack, to_prune

SUFFIX_ENV = "MEDIAPULSE_SCHEMA_SUFFIX"
GREEN = "__green"
LEGACY_PREVIOUS = "__previous"  # the one kept release of earlier versions
KEPT = re.compile(r"^(?P<live>.+)__r(?P<tag>[0-9a-f]{8})$")
LOCK_TIMEOUT_ENV = "MEDIAPULSE_SWAP_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 5.0
ATTEMPT_LOCK_TIMEOUT_S = 0.5
STAMP_TABLE = "_mediapulse_release"
STATE_TABLE = "_mediapulse_state"
BUILT_KINDS = ("model", "seed", "snapshot")
_TABLE_KINDS = ("r", "p", "m", "f")
_OURS = (STAMP_TABLE, STATE_TABLE)


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


def kept_suffix(release_id: str) -> str:
    """`__r` and 8 hex digits: the random tail of our release ids, else a digest of the id."""
    tail = release_id.rsplit("-", 1)[-1]
    if not re.fullmatch(r"[0-9a-f]{8}", tail):
        tail = hashlib.sha1(release_id.encode()).hexdigest()[:8]
    return f"__r{tail}"


@dataclass
class ReleaseSet:
    """One release's schemas in the database: live name -> the schema's name now."""

    stamp: Stamp
    schemas: dict[str, str] = field(default_factory=dict)
    expected: tuple[str, ...] = ()  # every live name the release had, as its stamp records

    def missing(self) -> list[str]:
        return sorted(set(self.expected) - set(self.schemas))


@dataclass
class Releases:
    """What the database holds of this target's releases (schemas owned by the releasing
    role only): the live one, and the kept ones newest first."""

    live: ReleaseSet | None
    kept: list[ReleaseSet]
    live_names: list[str]  # every live schema of a release, whatever release it carries


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
        return str(target_credentials(self.project, self.target).schema)

    @property
    def database(self) -> str:
        return str(target_credentials(self.project, self.target).database)

    def connect(self):  # type: ignore[no-untyped-def]

        return connect_postgres(self.project, self.target)

    def parse(
        self, env: dict[str, str], keep_incremental: bool = False
    ) -> tuple[DbtRun, list[str], list[tuple[str, str]]]:
        """`dbt parse` with green names (``env``: the release's environment, with `self.env`):
        (the run, the release's live schema names, the live tables green starts from as (live
        schema, table)): the snapshots, whose history continues, and with ``keep_incremental``
        (a refresh) the incremental models too."""
        run = run_dbt(resolve(self.project, self.target), ["parse"], extra_env=env)
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
            if len(live + kept_suffix("x")) > 63:
                raise MediaPulseError(
                    f"schema {live} is too long to keep for a rollback ({live}__r… exceeds "
                    "PostgreSQL's 63 characters): shorten MEDIAPULSE_PG_SCHEMA or the model's "
                    "+schema"
                )
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
                    cursor.execute("select pg_catalog.to_regclass(%s)", [f"{live}"])
                    if cursor.fetchone()[0] is None:
                        continue  # a first release, or a new table: dbt starts it
                    cursor.execute(f"create schema if not exists {green}")
                    copy = f"{green}.{_ident(table)}"
                    cursor.execute(f"create table {copy} (like {live} including all)")
                    cursor.execute(f"insert into {copy} select * from {live}")
                    cursor.execute("select pg_catalog.pg_total_relation_size(%s::regclass)", [copy])
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

    # -- what the database holds ---------------------------------------------------------

    def _releases(self, cursor) -> Releases:  # type: ignore[no-untyped-def]
        """Every stamped schema of this target's releases that the releasing role owns."""
        cursor.execute(
            "select n.nspname from pg_catalog.pg_class c "
            "join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
            "where c.relname = %s and c.relkind = 'r' "
            "and n.nspowner = (select oid from pg_catalog.pg_roles where rolname = current_user) "
            "order by 1",
            [STAMP_TABLE],
        )
        base = self.base_schema
        by_id: dict[str, ReleaseSet] = {}
        live_ids: set[str] = set()
        live_names: list[str] = []
        for (name,) in cursor.fetchall():
            if name.endswith(GREEN):
                continue
            kept = KEPT.match(name)
            plain = (
                kept.group("live") if kept else name.removesuffix(LEGACY_PREVIOUS)
            )  # fmt: skip
            if plain != base and not plain.startswith(base + "_"):
                continue
            row = self._stamp_row(cursor, name)
            if row.get("base") not in (None, base):
                continue  # another production whose schema starts with this one's name
            stamp = Stamp.from_row(row)
            entry = by_id.setdefault(stamp.release_id, ReleaseSet(stamp))
            entry.schemas[plain] = name
            recorded = row.get("schemas")
            if recorded:
                entry.expected = tuple(recorded)
            if name == plain:
                live_ids.add(stamp.release_id)
                live_names.append(plain)
        if len(live_ids) > 1:
            raise MediaPulseError(
                f"the live schemas of target '{self.target}' carry {len(live_ids)} releases "
                f"({', '.join(sorted(live_ids))}): production was changed by hand; restore "
                "one release, or start production over with `nightly --start-over`"
            )
        live = by_id.pop(next(iter(live_ids)), None) if live_ids else None
        for entry in by_id.values():
            if not entry.expected:  # stamped before schemas were recorded: the live names
                entry.expected = tuple(sorted(set(live_names) or set(entry.schemas)))
        for entry in by_id.values():
            entry.stamp = replace(entry.stamp, incomplete=_incomplete(cursor, entry))
        kept = sorted(by_id.values(), key=lambda e: e.stamp.release_id, reverse=True)
        return Releases(live, kept, sorted(live_names))

    def _stamp_row(self, cursor, schema: str) -> dict:  # type: ignore[no-untyped-def]
        cursor.execute(f"select * from {_ident(schema)}.{STAMP_TABLE} limit 1")
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
        return dict(zip(names, row, strict=True)) if row else {"release_id": "unknown"}

    def releases(self) -> Releases:
        con = self.connect()
        try:
            with con.cursor() as cursor:
                return self._releases(cursor)
        finally:
            con.rollback()
            con.close()

    def live_schemas(self) -> list[str]:
        return self.releases().live_names

    def live_stamp(self) -> Stamp | None:
        live = self.releases().live
        return live.stamp if live else None

    def read_state(self, found: ReleaseSet) -> list[tuple[str, bytes]] | None:
        """The packed state a release carries; None when none of its schemas has it."""
        con = self.connect()
        try:
            with con.cursor() as cursor:
                for name in sorted(found.schemas.values()):
                    cursor.execute(
                        "select pg_catalog.to_regclass(%s)", [f"{_ident(name)}.{STATE_TABLE}"]
                    )
                    if cursor.fetchone()[0] is not None:
                        cursor.execute(f"select name, content from {_ident(name)}.{STATE_TABLE}")
                        return [(n, bytes(c)) for n, c in cursor.fetchall()]
            return None
        finally:
            con.rollback()
            con.close()

    def removed_relations(self, schemas: list[str]) -> list[str]:
        """Relations of the live release that green does not have: what this release drops
        from production (they stay in the kept release until it is pruned)."""
        con = self.connect()
        try:
            with con.cursor() as cursor:
                live = _relations(cursor, self.live_schemas())
                green = {
                    (s.removesuffix(GREEN), n)
                    for s, n in _relations(cursor, [s + GREEN for s in schemas])
                }
        finally:
            con.rollback()
            con.close()
        return [f"{s}.{n}" for s, n in sorted(live - green)]

    # -- publish, rollback --------------------------------------------------------------

    def stamp(self, schemas: list[str], stamp: Stamp, state_dir: Path) -> None:
        """Stamp every green schema with the release, the first with the state it publishes."""
        import psycopg2

        con = self.connect()
        try:
            with con.cursor() as cursor:
                for schema in schemas:
                    green = _ident(schema + GREEN)
                    cursor.execute(f"create schema if not exists {green}")
                    cursor.execute(
                        f"create table {green}.{STAMP_TABLE} as select %s::text as release_id, "
                        "pg_catalog.now() as published_at, %s::text as job, %s::text as code, "
                        "%s::text as commit, %s::text as data_code, %s::text[] as schemas, "
                        "%s::text as base",
                        [stamp.release_id, stamp.job, stamp.code, stamp.commit, stamp.data_code,
                         schemas, self.base_schema],
                    )  # fmt: skip
                first = _ident(schemas[0] + GREEN)
                cursor.execute(f"create table {first}.{STATE_TABLE} (name text, content bytea)")
                for name, content in pack(state_dir):
                    cursor.execute(
                        f"insert into {first}.{STATE_TABLE} values (%s, %s)",
                        [name, psycopg2.Binary(content)],
                    )
            con.commit()
        except psycopg2.Error as exc:
            con.rollback()
            raise MediaPulseError(
                f"cannot stamp the green schemas of release {stamp.release_id} on target "
                f"'{self.target}': {_first_line(exc)}; production left as it was"
            ) from None
        finally:
            con.close()

    def publish(self, schemas: list[str], release_id: str) -> float:
        """In one transaction: each live schema becomes its kept name, each green one live,
        and the schema grants move with production (no role keeps anything on a kept schema).
        A live schema of the replaced release that this one no longer has goes with it. Call
        ``prune`` after. Returns the seconds the transaction took."""
        con = self.connect()
        try:
            with con.cursor() as cursor:
                found = self._releases(cursor)
                existing = _existing(cursor)
            con.rollback()
            live = found.live
            # a schema of this release's name that carries no release (built in place by
            # `mediapulse build`): kept like a release, never dropped unseen
            unstamped = sorted(s for s in schemas if s in existing and s not in found.live_names)
            if live is None and unstamped:
                when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                live = ReleaseSet(Stamp(f"{when}-in-place", job="built in place"))
            stamps = [(s, live.stamp) for s in unstamped] if live else []
            retiring = sorted({*found.live_names, *unstamped})
            renames: list[tuple[str, str]] = []
            if live is not None:
                suffix = kept_suffix(live.stamp.release_id)
                renames += [(s, s + suffix) for s in retiring]
            renames += [(s + GREEN, s) for s in schemas]
            kept_names = [n for e in found.kept for n in e.schemas.values()]
            revoke = [new for old, new in renames if old in retiring] + kept_names
            return self._transaction(
                con, retiring, [], renames, f"release {release_id}", stamps=stamps,
                grants=[(s, s + GREEN) for s in schemas], revoke=revoke,
                point_in="release.in-swap",
            )  # fmt: skip
        finally:
            con.close()

    def prune(self, found: Releases) -> list[str]:
        """Drop the kept releases beyond what release_state.to_prune keeps, in one
        transaction; returns their ids."""
        live = found.live.stamp if found.live else None
        pruned = to_prune([e.stamp for e in found.kept], live, keep_count())
        drops = [n for e in found.kept if e.stamp.release_id in pruned for n in e.schemas.values()]
        if drops:
            con = self.connect()
            try:
                self._transaction(con, sorted(drops), sorted(drops), [], "pruning kept releases")
            finally:
                con.close()
        return pruned

    def restore(self, found: Releases, target: ReleaseSet) -> float:
        """A rollback: ``target`` (a kept release, checked complete) becomes live in one
        transaction; the live release and the kept ones newer than it are dropped (what the
        rollback undoes). Returns the seconds the transaction took."""
        newer = [e for e in found.kept if e.stamp.release_id > target.stamp.release_id]
        drops = list(found.live_names)
        for entry in newer:
            drops += sorted(entry.schemas.values())
        renames = sorted((name, live) for live, name in target.schemas.items())
        con = self.connect()
        try:
            return self._transaction(
                con, sorted({*drops, *target.schemas.values()}), drops, renames,
                f"rollback to {target.stamp.release_id}",
                grants=[(live, name) for live, name in target.schemas.items()],
                point_after="rollback.after-swap",
            )  # fmt: skip
        finally:
            con.close()

    def _transaction(
        self,
        con,  # type: ignore[no-untyped-def]
        locked: list[str],
        drops: list[str],
        renames: list[tuple[str, str]],
        what: str,
        stamps: Sequence[tuple[str, Stamp]] = (),
        grants: Sequence[tuple[str, str]] = (),
        revoke: Sequence[str] = (),
        point_in: str = "",
        point_after: str = "",
    ) -> float:
        """Lock, stamp, grant, drop, rename, revoke, commit, as one transaction, retried until
        the lock timeout. ``stamps`` stamp schemas that carry no release; ``grants`` (from,
        onto) give ``onto`` what the live schema ``from`` granted (when it exists) and USAGE to
        every role granted SELECT on a relation of ``onto``, before the drops and renames;
        ``revoke`` takes every grant off a schema that leaves production (a kept release is not
        for readers).

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
                    for schema, stamp in stamps:
                        _stamp_in_place(cursor, schema, stamp, self.base_schema)
                    for source, onto in grants:
                        _grant_readers(cursor, source, onto)
                    for schema in drops:
                        cursor.execute(f"drop schema {_ident(schema)} cascade")
                    for old, new in renames:
                        cursor.execute(f"alter schema {_ident(old)} rename to {_ident(new)}")
                    for schema in revoke:
                        _revoke_all(cursor, schema)
                    if point_in:
                        failpoints.reach(point_in)
                con.commit()
                if point_after:
                    failpoints.reach(point_after)
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


def _existing(cursor) -> set[str]:  # type: ignore[no-untyped-def]
    cursor.execute("select nspname from pg_catalog.pg_namespace")
    return {row[0] for row in cursor.fetchall()}


def _stamp_in_place(cursor, schema: str, stamp: Stamp, base: str) -> None:  # type: ignore[no-untyped-def]
    cursor.execute(
        f"create table {_ident(schema)}.{STAMP_TABLE} as select %s::text as release_id, "
        "pg_catalog.now() as published_at, %s::text as job, null::text as code, "
        "null::text as commit, null::text as data_code, null::text[] as schemas, "
        "%s::text as base",
        [stamp.release_id, stamp.job, base],
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _relations(cursor, schemas: list[str]) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    if not schemas:
        return set()
    cursor.execute(
        "select n.nspname, c.relname from pg_catalog.pg_class c "
        "join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = any(%s) and c.relkind in ('r', 'p', 'm', 'f', 'v') "
        "and c.relname <> all(%s)",
        [schemas, list(_OURS)],
    )
    return {(s, n) for s, n in cursor.fetchall()}


def _lock_schemas(cursor, schemas: list[str]) -> None:  # type: ignore[no-untyped-def]
    """ACCESS EXCLUSIVE on every relation of ``schemas``: a reader's next reference waits for
    the commit, then resolves its names in the new release."""
    if not schemas:
        return
    cursor.execute(
        "select pg_catalog.format('%%I.%%I', n.nspname, c.relname), c.relkind, "
        "pg_catalog.pg_get_userbyid(c.relowner) from pg_catalog.pg_class c "
        "join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
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
    with grant option or not). Returns the number of grants copied; none when ``source`` does
    not exist."""
    cursor.execute(
        "select case when a.grantee = 0 then 'public' else pg_catalog.quote_ident(r.rolname) "
        "end, a.privilege_type, a.is_grantable from pg_catalog.pg_namespace n "
        "cross join lateral pg_catalog.aclexplode(n.nspacl) a "
        "left join pg_catalog.pg_roles r on r.oid = a.grantee "
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


def _grant_readers(cursor, source: str, onto: str) -> None:  # type: ignore[no-untyped-def]
    """``onto`` gets what ``source`` granted, and USAGE for every role its relations grant
    SELECT to (dbt's `grants` config): what the on-run-end hook grants outside a release, given
    here only as the schema goes live, never to a green or kept one."""
    if source:
        copy_schema_grants(cursor, source, onto)
    cursor.execute(
        "select distinct pg_catalog.quote_ident(r.rolname) from pg_catalog.pg_class c "
        "join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
        "cross join lateral pg_catalog.aclexplode(c.relacl) a "
        "join pg_catalog.pg_roles r on r.oid = a.grantee "
        "where n.nspname = %s and a.privilege_type = 'SELECT' and a.grantee <> c.relowner",
        [onto],
    )
    for (role,) in cursor.fetchall():
        cursor.execute(f"grant usage on schema {_ident(onto)} to {role}")


def _revoke_all(cursor, schema: str) -> None:  # type: ignore[no-untyped-def]
    cursor.execute(
        "select distinct case when a.grantee = 0 then 'public' "
        "else pg_catalog.quote_ident(r.rolname) end from pg_catalog.pg_namespace n "
        "cross join lateral pg_catalog.aclexplode(n.nspacl) a "
        "left join pg_catalog.pg_roles r on r.oid = a.grantee "
        "where n.nspname = %s and a.grantee <> n.nspowner",
        [schema],
    )
    for (grantee,) in cursor.fetchall():
        cursor.execute(f"revoke all on schema {_ident(schema)} from {grantee}")


def rename_in_state(state: Path) -> None:
    """The artifacts of a green build name green schemas (those it built, and those it would
    store test failures in); once swapped, those are live's names, and slim CI defers to the
    names the state holds."""
    green_name = re.compile(r"\b(\w+?)" + GREEN + r"\b")
    for path in state.iterdir():
        if path.is_file() and path.suffix == ".json":
            path.write_text(green_name.sub(r"\1", path.read_text()))


def _incomplete(cursor, entry: ReleaseSet) -> str | None:  # type: ignore[no-untyped-def]
    """Why a kept release cannot be restored: a schema it had is gone, or it carries no
    state; None when it can."""
    missing = entry.missing()
    if missing:
        suffix = kept_suffix(entry.stamp.release_id)
        return f"schema {', '.join(m + suffix for m in missing)} is missing"
    for name in entry.schemas.values():
        cursor.execute("select pg_catalog.to_regclass(%s)", [f"{_ident(name)}.{STATE_TABLE}"])
        if cursor.fetchone()[0] is not None:
            return None
    return "none of its schemas carries its published state (written by an earlier version)"


def check_complete(found: ReleaseSet) -> None:
    """A kept release a rollback may restore: every schema it had, stamped with its id."""
    missing = found.missing()
    if missing:
        names = ", ".join(f"{m}{kept_suffix(found.stamp.release_id)}" for m in missing)
        raise MediaPulseError(
            f"kept release {found.stamp.release_id} is incomplete: schema {names} is missing "
            "(dropped by hand?); production left as it was: restore it, or roll back --to "
            "another kept release"
        )
