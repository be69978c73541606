"""Releases: every change to production, all or nothing.

`mediapulse nightly` rebuilds production from scratch (`dbt build --full-refresh`, every test,
source freshness, docs), the reset that catches drift. `mediapulse deploy` does the same from
the merged code. `mediapulse refresh`, the hourly job, picks up the raw rows loaded since the
live release with the incremental models and tests those rows (the rules that need the whole
history wait for the nightly). `mediapulse rollback` puts back the release the last one
replaced.

Every release builds a staged copy of production and makes it live only when every step
passed: a copy of the file on DuckDB (`duckdb_release`), green schemas swapped in by one
transaction on PostgreSQL (`pg_release`). It publishes the production state `mediapulse slim-ci
--state` compares with (manifest.json, run_results.json, sources.json, catalog.json, a
Markdown report and release.json) to ``--artifacts DIR``; the state it replaces moves to
``DIR/previous/``, so a rollback puts back the production and the state that belong together.

release.json records, beside the release id: the project's vars (dbt's `state:modified` does
not compare them, slim CI does), a fingerprint of the code (a refresh runs only the code that
is live) and the raw tables' row counts and newest loads (what the next refresh compares with).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mediapulse.core import failpoints
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.markdown import markdown_table, write_summary
from mediapulse.core.project import Project
from mediapulse.core.sources import declared_raw_tables
from mediapulse.dbt import artifacts, runner
from mediapulse.dbt.runner import DbtRun, run_dbt
from mediapulse.engines.base import CI_ROLE, CI_TARGET_ENV, Capability, Engine, default_target
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.targets import resolve
from mediapulse.jobs import prepare
from mediapulse.monitoring import history
from mediapulse.monitoring import views as monitoring
from mediapulse.monitoring.schema_changes import SchemaChangeError
from mediapulse.release import docs as release_docs
from mediapulse.release.checks import NO_STATE, published_state
from mediapulse.release.duckdb import TARGET as DUCKDB_PROD
from mediapulse.release.plan import make_plan, node_name
from mediapulse.release.record import refuse_if_staged
from mediapulse.release.staging import Staging, staging_for
from mediapulse.release.state import (
    CI_PARSE,
    PARSE,
    RELEASE_FILE,
    RELEASE_PARSE,
    Stamp,
    choose_rollback,
    replace_dir,
    restore_state,
    share_parse,
)

STATE_FILES = ("manifest.json", "run_results.json", "sources.json", "catalog.json")
# Files of the published state a job may not write, kept from the state it replaces: a
# refresh's catalog (same code, same columns), freshness from the nightly, and the evaluator
# report the nightly and deploy workflows add after their release (pull requests' baseline).
CARRIED_OVER = ("catalog.json", "sources.json", "evaluator.json", "static_index.html")
# dbt's docs site as one file (catalog and manifest inlined), release_docs.STATIC_DOCS: opens
# from a file, no server; published with the state, and beside the morning report as docs.html
DOCS_STEP = ("docs", ["docs", "generate", "--static"])
# dbt's saved parse of this release's code for the CI target (slim CI starts from it), as
# `partial_parse.<target>.msgpack`; a refresh keeps it (same code)
PREVIOUS = "previous"  # the replaced release's state, inside the state directory
SINCE_ENV = "MEDIAPULSE_REFRESH_SINCE"  # read by macro get_where_subquery
# What a release's code is: every file dbt reads to build the project (not profiles: a
# refresh on another target is still the same code).
CODE_PATHS = ("models", "macros", "seeds", "snapshots", "tests", "analyses")
CODE_FILES = ("dbt_project.yml", "packages.yml", "package-lock.yml", "selectors.yml")
CODE_SUFFIXES = (".sql", ".yml", ".yaml", ".csv", ".md", ".py")


@dataclass(frozen=True)
class Job:
    name: str
    title: str
    full_refresh: bool  # rebuild every model from scratch
    freshness: bool  # check source freshness
    docs: bool  # generate the catalog (a refresh keeps the live one: same code, same columns)
    # (re)build the monitoring views with the released code (a refresh releases no new code)
    monitoring: bool


NIGHTLY = Job("nightly", "Nightly", full_refresh=True, freshness=True, docs=True, monitoring=True)
DEPLOY = Job("deploy", "Deploy", full_refresh=True, freshness=False, docs=True, monitoring=True)
REFRESH = Job("refresh", "Refresh", full_refresh=False, freshness=False, docs=False,
              monitoring=False)  # fmt: skip


@dataclass
class Step:
    name: str
    command: str
    ok: bool
    seconds: float
    problems: list[str] = field(default_factory=list)


def new_release_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def write_record(
    staged_state: Path,
    release_id: str,
    job: str,
    project_vars: dict,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """release.json of a staged state: the release id, the job, and the project's vars
    (dbt's `state:modified` does not compare them, so slim CI does, against the vars
    production was built with), with ``extra`` (the code fingerprint, the raw marks)."""
    record = {
        "release_id": release_id,
        "job": job,
        "built_at": datetime.now(UTC).isoformat(),
        "vars": project_vars,
        **(extra or {}),
    }
    (staged_state / RELEASE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def publish_state(staged_state: Path, state_dir: Path) -> None:
    """Make ``staged_state`` the published state (the replaced one is removed once it is)."""
    shutil.rmtree(staged_state / PREVIOUS, ignore_errors=True)
    replace_dir(staged_state, state_dir)


def _freshness_problems(target_dir: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the last `dbt source freshness`, one line per stale source."""
    data = artifacts.load_json(target_dir / "sources.json", "source freshness results")
    errors, warnings = [], []
    for result in data.get("results", []):
        source = result["unique_id"].split(".", 2)[-1]
        age = result.get("max_loaded_at_time_ago_in_s")
        line = f"source {source}: {result['status']}" + (
            f", newest row loaded {age / 3600:.1f} h ago" if age is not None else ""
        )
        if result["status"] in ("error", "runtime error"):
            errors.append(line)
        elif result["status"] == "warn":
            warnings.append(line)
    return errors, warnings


def repair_state(engine: Engine, state_dir: Path) -> str | None:
    """The warehouse says which release is live; the published state must describe it. When
    they differ (a job stopped between its swap and publishing its state; artifacts restored
    out of step), the live release's own state, which it carries, is put back in
    ``state_dir``. Returns the notice, or None when nothing needed repair. A live release
    that carries no state (built by an earlier version) cannot be repaired: one line."""
    target = engine.target
    stamp, read = staging_for(engine).live()
    if stamp is None:
        return None
    described = published_state(state_dir)
    said = (described or {}).get("release_id")
    if said == stamp.release_id:
        return None
    files = read()
    was = f"described release {said}" if said else "described no release"
    if described is None:
        was = "was empty"
    if files is None:
        raise MediaPulseError(
            f"production on target '{target}' is release {stamp.release_id} but the state in "
            f"{state_dir} {was.removeprefix('described ')}, and the release carries no state to "
            "repair it from (built by an earlier version): restore the matching production "
            "state, or run the nightly with --start-over"
        )
    restore_state(files, state_dir)
    older = (
        " (production is older than the release the state described: that one was lost before "
        "its warehouse was saved, or an older warehouse was restored)"
        if said and said > stamp.release_id else ""
    )  # fmt: skip
    return (
        f"notice: the state in {state_dir} {was} but production is {stamp.describe()} (a job "
        f"stopped after its swap, or the artifacts are out of step){older}: its state was "
        "restored from the warehouse"
    )


RUNTIME_PACKAGES = ("dbt-core", "dbt-duckdb", "dbt-postgres", "dbt-spark", "duckdb")


def code_fingerprint(project: Project) -> str:
    """A hash of every file dbt reads to build the project, and of the versions of dbt and
    the adapters that run it: equal fingerprints, same code."""
    digest = hashlib.sha256(_runtime().encode() + b"\0")
    files = [project.root / name for name in CODE_FILES]
    for folder in CODE_PATHS:
        root = project.root / folder
        if root.is_dir():
            files += sorted(
                p for p in root.rglob("*")
                if p.is_file() and p.suffix in CODE_SUFFIXES
                and p.relative_to(project.root).parts[:2] != ("tests", "python")
            )  # fmt: skip
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(project.root)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


# a node's config keys that say nothing about its data (documentation, ownership, tags)
_NOT_DATA = frozenset({"docs", "meta", "tags", "persist_docs", "group", "access", "grants"})


def data_fingerprint(manifest: dict[str, Any], project_vars: dict[str, Any]) -> str:
    """A hash of what decides the data a build produces (pure): each model, seed and
    snapshot of the project (its SQL or CSV, and its config but for documentation and
    ownership), every macro of every package, the project's vars, and the versions of dbt
    and the adapters. Descriptions, tests and exposures are not in it: a release that only
    changed those has the data of the one before, and a rollback looks past it."""
    digest = hashlib.sha256()
    root = manifest["metadata"].get("project_name")
    for uid in sorted(manifest["nodes"]):
        node = manifest["nodes"][uid]
        if node["resource_type"] not in ("model", "seed", "snapshot"):
            continue
        if node.get("package_name") != root:
            continue
        config = {k: v for k, v in (node.get("config") or {}).items() if k not in _NOT_DATA}
        digest.update(uid.encode() + b"\0" + str(node["checksum"]["checksum"]).encode())
        digest.update(json.dumps(config, sort_keys=True, default=str).encode() + b"\0")
    for uid in sorted(manifest.get("macros") or {}):
        digest.update(uid.encode() + b"\0" + manifest["macros"][uid]["macro_sql"].encode())
    digest.update(json.dumps(project_vars, sort_keys=True, default=str).encode())
    digest.update(_runtime().encode())
    return digest.hexdigest()[:16]


def _runtime() -> str:
    versions = []
    for package in RUNTIME_PACKAGES:
        try:
            versions.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package}==-")
    return ",".join(versions)


def raw_marks(engine: Engine) -> dict[str, list[Any]]:
    """Each raw table the sources declare: [row count, newest `loaded_at`, newest `loaded_at`
    not in the future (UTC)]. Equal counts and newest loads: the same raw data (loads append or
    replace rows and stamp what they write). Read only."""
    tables = declared_raw_tables(engine.project)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")  # loads are stamped in UTC
    query = (
        "select count(*), cast(max(loaded_at) as varchar), cast(max(case when loaded_at <= "
        f"cast('{now}' as timestamp) then loaded_at end) as varchar) from {{}}"
    )
    marks: dict[str, list[Any]] = {}
    with engine.connect_raw("read the raw data's newest loads") as session:
        for table in tables:
            count, newest, past = session.one(query.format(table)) or (0, None, None)
            marks[table] = [int(count), newest, past]
    return marks


def scoped_sources(manifest: dict[str, Any]) -> list[str]:
    """The raw tables (schema.table) whose new rows a refresh tests: the sources that
    dbt_project.yml gives a `new_rows_column`."""
    return sorted(
        f"{source['schema']}.{source['identifier']}"
        for source in manifest["sources"].values()
        if (source["config"].get("meta") or {}).get("new_rows_column")
    )


@dataclass(frozen=True)
class RefreshPlan:
    """What a refresh runs: nothing (no new raw rows), or a build of the new rows."""

    previous: dict[str, Any]
    marks: dict[str, list[Any]]
    since: str | None  # the live release's newest event load: tests read the rows after it
    excluded: tuple[str, ...]  # selectors of the tests left to the nightly
    new_rows: dict[str, int]  # raw table: rows added since the live release
    selection: tuple[str, ...] = ()  # what the new rows reach (and the clock): dbt --select

    @property
    def nothing_new(self) -> bool:
        before = self.previous.get("raw") or {}
        return before.keys() == self.marks.keys() and all(
            before[t][:2] == mark[:2] for t, mark in self.marks.items()
        )


def whole_history_tests(manifest: dict[str, Any], rule_names: list[str]) -> list[dict]:
    """The tests a refresh leaves to the nightly: a whole-history rule (``rule_names``) on a
    relation whose new rows a refresh tests (`new_rows_column`). Tests of the tables a
    refresh rebuilds from scratch keep running: those tables are new every time."""
    scoped = {
        uid for uid, node in {**manifest["nodes"], **manifest["sources"]}.items()
        if ((node.get("config") or {}).get("meta") or node.get("meta") or {}).get(
            "new_rows_column"
        )
    }  # fmt: skip
    chosen = []
    for node in manifest["nodes"].values():
        if node["resource_type"] != "test" or not node.get("test_metadata"):
            continue
        tested = node.get("attached_node") or next(
            (p for p in node["depends_on"]["nodes"] if p.startswith("source.")), None
        )
        if tested in scoped and node["test_metadata"]["name"] in rule_names:
            chosen.append(node)
    return chosen


# The macro that gives a model the run's start time: a table or view calling it (the revenue
# as-of day) can change without new raw rows, as the clock moves. Incremental models call it
# for their watermark only, which decides what they re-read, not what they hold (an incremental
# run equals a full refresh of the same rows).
CLOCK_MACRO = "macro.mediapulse.run_started_timestamp"


def refresh_selection(manifest: dict[str, Any], changed_tables: list[str]) -> tuple[str, ...]:
    """What a refresh rebuilds (pure): everything downstream of the raw tables with new rows
    (``schema.table``), and of the models that read the clock. Nothing else can differ from
    the live release, which is this same code on the same other inputs: seeds (code),
    unchanged sources, and what is built from them only, stay as they are and untested."""
    changed = set(changed_tables)
    selectors = [
        f"source:{source['source_name']}.{source['name']}+"
        for source in manifest["sources"].values()
        if f"{source['schema']}.{source['identifier']}" in changed
    ]
    ours = manifest["metadata"]["project_name"]
    selectors += [
        "fqn:" + ".".join(node["fqn"]) + "+"
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["package_name"] == ours
        and node.get("config", {}).get("materialized") != "incremental"
        and CLOCK_MACRO in artifacts.macros_called(manifest, node)
    ]  # fmt: skip
    return tuple(sorted(selectors))


def plan_refresh(engine: Engine, state_dir: Path) -> RefreshPlan:
    """Refuse what a refresh must not do (no production, other code), then compare the raw
    tables with what the live release read."""
    project = engine.project
    previous = published_state(state_dir)
    if previous is None:
        raise MediaPulseError(NO_STATE.format(state_dir=state_dir))
    live = previous.get("release_id") or f"built {previous.get('built_at')}"
    code = previous.get("code")
    if code is None or code != code_fingerprint(project):
        why = (
            "records no code fingerprint (published before refreshes existed)" if code is None
            else "was built from other code than this checkout"
        )  # fmt: skip
        raise MediaPulseError(
            f"production (release {live}) {why}: a refresh only adds new rows to the code "
            "that is live; release this code with `mediapulse deploy` (or the nightly), then "
            "refresh"
        )
    marks = raw_marks(engine)
    before = previous.get("raw") or {}
    manifest = artifacts.load_json(state_dir / "manifest.json", "production manifest")
    newest = [before[t][2] for t in scoped_sources(manifest) if t in before and before[t][2]]
    rules = list(project.vars.get("whole_history_tests") or [])
    excluded = tuple(
        "fqn:" + ".".join(node["fqn"]) for node in whole_history_tests(manifest, rules)
    )
    new_rows = {
        t: marks[t][0] - (before.get(t) or [0])[0]
        for t in marks if marks[t][:2] != (before.get(t) or [])[:2]
    }  # fmt: skip
    return RefreshPlan(
        previous, marks, min(newest) if newest else None, excluded, new_rows,
        refresh_selection(manifest, list(new_rows)),
    )  # fmt: skip


def deploy_fallback(project: Project, state_dir: Path) -> str | None:
    """Why a deploy must build everything instead of what changed; None when it need not."""
    from dbt.version import __version__ as dbt_version

    if published_state(state_dir) is None or not (state_dir / "manifest.json").is_file():
        return f"no published production state in {state_dir}"
    metadata = artifacts.load_json(state_dir / "manifest.json", "production manifest")["metadata"]
    ours = project.dbt_project_name
    if metadata.get("project_name") != ours:
        return f"the published state is of project {metadata.get('project_name')!r}, not {ours!r}"
    if metadata.get("dbt_version") != dbt_version:
        return (
            f"the published state was written by dbt {metadata.get('dbt_version')}, this is "
            f"dbt {dbt_version} (its comparison of states is not reliable across versions)"
        )
    return None


def _deploy_plan(
    engine: Engine,
    state_dir: Path,
    env: dict[str, str],
    notes: list[str],
    staging: Staging,
) -> list[tuple[str, list[str]]]:
    """A deploy's dbt steps: what changed against the published state (dbt's
    `state:modified+`, plus what slim CI adds: readers of changed vars, tests of changed
    exposures, changed tests), rebuilt from scratch (`--full-refresh`: an incremental model
    whose logic or upstream changed is rebuilt whole) inside the staged copy, which holds
    everything else as it is live. Without a usable state: every model, with a notice."""
    project = engine.project
    why = deploy_fallback(project, state_dir)
    if why is None and not staging.has_live_copy:
        why = "no production warehouse to keep the unchanged models of"
    if why is None:
        in_file = staging.live_copy_id()
        described = (published_state(state_dir) or {}).get("release_id")
        if in_file and described and in_file != described:
            why = f"production is release {in_file} but the state describes release {described}"
    docs = DOCS_STEP
    if why:
        notes.append(f"notice: {why}: full build of the project")
        return [("build", ["build", "--full-refresh"]), docs]
    plan = make_plan(engine, state_dir, None, env)
    notes += [f"notice: {n}" for n in plan.notices]
    live = (published_state(state_dir) or {}).get("release_id")
    if plan.empty:
        notes.append(f"no changes against release {live}: nothing to rebuild")
        return [docs]
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    incremental = [
        node_name(u) for u in plan.selected
        if manifest["nodes"][u]["config"].get("materialized") == "incremental"
    ]  # fmt: skip
    notes.append(
        f"builds what changed against release {live} (state:modified+): "
        f"{len(plan.modified)} modified, {len(plan.downstream)} downstream, {plan.tests} tests; "
        f"incremental models rebuilt whole: {', '.join(incremental) or 'none'}; everything else "
        "kept as it is live"
    )
    steps = []
    state = ["--state", str(state_dir), "--exclude", "package:dbt_project_evaluator", MONITORING]
    if plan.needs_build:
        steps.append(("build", ["build", "--select", *plan.selection, "--full-refresh", *state]))
        if release_docs.can_narrow(state_dir):  # the rest of the catalog is the live one's
            docs = (DOCS_STEP[0], [*DOCS_STEP[1], "--select", *plan.selection, *state])
    if plan.standalone_unit_tests:
        steps.append(("unit tests", ["test", "--select", *plan.standalone_selection, *state]))
    return [*steps, docs]


# the monitoring models read the run history, which a release does not build: `mediapulse
# report` builds them after the job has recorded itself (selectors.yml, `monitoring`)
MONITORING = "path:models/monitoring"

RETRIES_ENV = "MEDIAPULSE_RETRIES"
RETRY_DELAY_ENV = "MEDIAPULSE_RETRY_DELAY_S"
# Errors that say nothing about the data or the code: the connection or a lock, which the
# next attempt may well get. Anything else (a failing test above all) is never retried.
TRANSIENT = re.compile(
    r"server closed the connection unexpectedly|terminating connection|connection already "
    r"closed|could not connect to server|connection to server at .* failed|connection refused|"
    r"timeout expired|connection timed out|ssl syscall error|ssl connection has been closed "
    r"unexpectedly|lock timeout|deadlock detected|"
    r"could not serialize access|could not set lock on file|conflicting lock is held",
    re.IGNORECASE,
)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name) or str(default)
    if not raw.isdigit():
        raise MediaPulseError(f"{name}={raw!r} is not a whole number")
    return int(raw)


def transient_failure(target_dir: Path, error: str | None) -> str | None:
    """The transient error a failed dbt invocation died of, or None when anything failed for
    another reason (a test, SQL, the data): only the former is worth another attempt."""
    results_file = target_dir / "run_results.json"
    if not results_file.exists():
        return error if error and TRANSIENT.search(error) else None
    failed = [
        r for r in artifacts.load_json(results_file, "dbt run results")["results"]
        if r["status"] in ("error", "fail", "runtime error")
    ]  # fmt: skip
    if not failed or any(r["status"] == "fail" for r in failed):
        return None
    messages = [str(r.get("message") or "") for r in failed]
    if not all(TRANSIENT.search(m) for m in messages):
        return None
    # the line that says what happened, not dbt's "Database Error in test ..." above it
    return next(line.strip() for line in messages[0].splitlines() if TRANSIENT.search(line))


def _merge_results(first: dict[str, Any], retried: dict[str, Any]) -> dict[str, Any]:
    """One run_results.json for a step that took several attempts: each node's last result."""
    by_id = {r["unique_id"]: r for r in first["results"]}
    by_id.update({r["unique_id"]: r for r in retried["results"]})
    elapsed = first.get("elapsed_time", 0) + retried.get("elapsed_time", 0)
    return {**retried, "results": list(by_id.values()), "elapsed_time": elapsed}


def run_with_retries(
    engine: Engine, args: list[str], env: dict[str, str], notes: list[str]
) -> DbtRun:
    """One release step; after a transient failure, `dbt retry` (the failed and skipped nodes
    only, in the same staged release) up to $MEDIAPULSE_RETRIES times (default 2), waiting
    $MEDIAPULSE_RETRY_DELAY_S seconds (default 10) before each. A run that died before dbt
    recorded any node is started again whole."""
    project = engine.project
    results_file = project.target_dir / "run_results.json"
    retries, delay = _int_env(RETRIES_ENV, 2), _int_env(RETRY_DELAY_ENV, 10)
    results_file.unlink(missing_ok=True)
    result = run_dbt(engine, args, extra_env=env)
    elapsed = result.elapsed_s
    for attempt in range(1, retries + 1):
        if result.success:
            break
        reason = transient_failure(project.target_dir, result.error)
        if reason is None:
            break
        earlier = artifacts.load_json(results_file, "results") if results_file.exists() else None
        how = "dbt retry (the failed nodes and what they skipped)" if earlier else "again, whole"
        notes.append(f"retry {attempt} of `{args[0]}` after a transient error ({reason}): {how}")
        time.sleep(delay)
        # dbt retry reads the last run's results; a whole rerun starts without any
        if earlier is None:
            results_file.unlink(missing_ok=True)
        result = run_dbt(engine, ["retry"] if earlier else args, extra_env=env)
        elapsed += result.elapsed_s
        if earlier and results_file.exists():
            merged = _merge_results(earlier, artifacts.load_json(results_file, "results"))
            results_file.write_text(json.dumps(merged))
    return DbtRun(args=tuple(args), success=result.success, error=result.error,
                  elapsed_s=elapsed, messages=result.messages)  # fmt: skip


def publish_ci_parse(project: Project, dbt: runner.DbtSession, live_state: Path,
                     staging: Path) -> str:  # fmt: skip
    """dbt's parse of this release's code for the CI target, published with the state: slim CI
    on a fresh runner starts from it (dbt then parses only the files a pull request changed)
    instead of parsing the whole project, the longest part of checking a one-model change.
    Parsing reads no data; dbt checks the saved parse against the profile, vars and dbt
    version it was made with, and parses everything when they differ. It starts from the live
    release's (``live_state``): only the files this release changed are parsed again. Made
    after the swap, in the job's dbt process (``dbt``: it holds no file between invocations).
    DuckDB only: a CI run on a server has schemas of its own, a profile no other run shares. Returns
    the report's line; a failure costs slim CI time, not the release."""
    ci = default_target(CI_ROLE)
    if ci not in project.outputs or not resolve(project, ci).embedded:
        return f"no parse published for slim CI: no DuckDB target `{ci}` (${CI_TARGET_ENV})"
    started = time.perf_counter()
    name = CI_PARSE.format(target=ci)
    with tempfile.TemporaryDirectory(prefix="mediapulse-ci-parse-") as tmp:
        saved = Path(tmp) / "partial_parse.msgpack"
        if (live_state / name).is_file():
            shutil.copy2(live_state / name, saved)
        run = dbt.run(["parse", "--target", ci, "--target-path", tmp], quiet=True, count=False)
        if not run.success or not saved.is_file():
            return (
                f"notice: dbt could not parse the project for slim CI on target `{ci}` "
                f"({run.error or 'no saved parse'}); the previous parse, if any, is kept"
            )
        shutil.copy2(saved, staging / name)
    return (
        f"parse for slim CI on target `{ci}` published ({time.perf_counter() - started:.1f} s): "
        "a pull request's slim CI starts from it"
    )


def run_nightly(
    engine: Engine, artifacts_dir: Path, summary: Path | None,
    start_over: bool = False,
) -> int:  # fmt: skip
    """Full refresh, source freshness, docs; publish production and its state."""
    return run_release(engine, artifacts_dir, summary, NIGHTLY, start_over)


def run_deploy(
    engine: Engine, artifacts_dir: Path, summary: Path | None,
    start_over: bool = False,
) -> int:  # fmt: skip
    """Build production from the merged code with every test; swap it in only if all pass."""
    return run_release(engine, artifacts_dir, summary, DEPLOY, start_over)


def run_refresh(engine: Engine, artifacts_dir: Path, summary: Path | None) -> int:
    """The new raw rows through the incremental models, their tests on those rows; released
    like every other change. Nothing new: says so and releases nothing."""
    return run_release(engine, artifacts_dir, summary, REFRESH)


def check_release_target(engine: Engine) -> None:
    """A DuckDB release is of production's file (target `prod`): refuse any other DuckDB
    target, whose build would not be the file a release stages and swaps."""
    project, target = engine.project, engine.target
    if engine.embedded and target != DUCKDB_PROD:
        raise MediaPulseError(
            f"target '{target}' is not DuckDB production: releases, rollbacks and the kept "
            f"releases are those of target '{DUCKDB_PROD}' ({duckdb_file(project, DUCKDB_PROD)}); "
            f"pass --target {DUCKDB_PROD}, or build '{target}' with `mediapulse build`"
        )


def run_release(
    engine: Engine,
    artifacts_dir: Path,
    summary: Path | None,
    job: Job,
    start_over: bool = False,
) -> int:
    """One job that changes production, all or nothing, while holding the release lock: no
    other job can stage, build, swap or roll back production until it is done."""
    check_release_target(engine)
    refuse_if_staged(artifacts_dir, job.name)
    with release_lock(engine, job.name) as lock:
        refuse_if_staged(artifacts_dir, job.name)  # prepared while this job waited for the lock
        return _run_release(engine, artifacts_dir, summary, job, start_over, lock)


@contextmanager
def release_lock(engine: Engine, job: str) -> Iterator[Any]:
    """The lock every job that changes production holds (mediapulse.release.lock): a file
    lock beside DuckDB production, an advisory lock on PostgreSQL; yields the PostgreSQL
    connection that holds it (checked again before the swap), else None."""
    with staging_for(engine).lock(job) as lock:
        yield lock


def _checks(
    engine: Engine, staging: Staging, artifacts_dir: Path, job: Job, start_over: bool
) -> list[str]:
    """Before anything is staged: the state repaired to describe what is live, and the
    refusals of a job that would lose production's history. Returns notices for the report."""
    notes = []
    if engine.can(Capability.STAGED_RELEASES) and not start_over:
        repaired = repair_state(engine, artifacts_dir)
        if repaired:
            print(repaired)
            notes.append(repaired)
    staging.check_before_prepare(artifacts_dir, job.full_refresh, start_over)
    return notes


def _unchanged_code(project: Project, artifacts_dir: Path) -> str | None:
    """A deploy of the code that is live changes nothing: the live release's id, else None."""
    live = published_state(artifacts_dir) or {}
    if live.get("release_id") and live.get("code") == code_fingerprint(project):
        return str(live["release_id"])
    return None


def _skip(
    engine: Engine, clock: history.Job, report: str, summary: Path | None,
    notes: list[str],
) -> int:  # fmt: skip
    report += "".join(f"\n{note}\n" for note in notes)
    report += "\n" + history.record_job(engine, clock, True, None, status="skipped")
    print(report)
    write_summary(report, summary)
    return 0


def _run_release(
    engine: Engine,
    artifacts_dir: Path,
    summary: Path | None,
    job: Job,
    start_over: bool,
    lock: Any,
) -> int:
    clock = history.Job(job.name, engine.target)  # the run history's record of this job
    staging = staging_for(engine)
    before = before_staging(engine, staging, artifacts_dir, job, start_over, clock)
    if before.skipped:
        return _skip(engine, clock, before.skipped, summary, before.notes)
    staging.stage(before.notes)
    before.env.update(staging.env)
    run = _Run(engine, artifacts_dir, job, staging, before.refresh, before.env, before.notes, lock)
    return run.execute(clock, summary)


@dataclass
class BeforeStaging:
    """What a release knows before it stages anything: its notes, what a refresh adds, the
    environment of its builds, or why it has nothing to do."""

    notes: list[str]
    refresh: RefreshPlan | None
    env: dict[str, str]
    skipped: str | None


def before_staging(
    engine: Engine, staging: Staging, artifacts_dir: Path, job: Job, start_over: bool,
    clock: history.Job,
) -> BeforeStaging:  # fmt: skip
    """The checks and plan of every release, in one process (`nightly`) or in steps
    (`release prepare`): the state repaired, the refusals, the packages and raw data, the
    schema check, and for a refresh the new rows."""
    notes: list[str] = _checks(engine, staging, artifacts_dir, job, start_over)
    try:
        prepare.prepare(engine)
    except SchemaChangeError:
        # stopped before any model ran: a failed run all the same, with what the check found
        history.record_job(engine, clock, False, None)
        raise
    staging.check_after_prepare(artifacts_dir, start_over)
    refresh = None if job.full_refresh else plan_refresh(engine, artifacts_dir)
    skipped = _nothing_to_do(engine, artifacts_dir, job, refresh, start_over)
    env: dict[str, str] = {}
    if refresh and not skipped:
        added = ", ".join(f"{t} +{n:,}" for t, n in refresh.new_rows.items())
        notes.append(f"new raw rows since release {refresh.previous.get('release_id')}: {added}")
        if refresh.since:
            env[SINCE_ENV] = refresh.since
            notes.append(
                f"tests of the incremental models read the rows loaded after {refresh.since}; "
                f"{len(refresh.excluded)} whole-history tests wait for the nightly"
            )
    return BeforeStaging(notes, refresh, env, skipped)


def _nothing_to_do(
    engine: Engine,
    artifacts_dir: Path,
    job: Job,
    refresh: RefreshPlan | None,
    start_over: bool,
) -> str | None:
    """The report of a job that would release nothing new, or None."""
    project, target = engine.project, engine.target
    if refresh and refresh.nothing_new:
        live = refresh.previous.get("release_id")
        return (
            f"## {job.title} on `{target}`: nothing to do, release {live} stays live\n\n"
            f"No new raw rows since release {live}: every raw table holds the rows it read "
            "(row counts and newest loads). Nothing was built or released.\n"
        )
    unchanged = _unchanged_code(project, artifacts_dir) if job is DEPLOY else None
    if unchanged and not start_over:
        return (
            f"## {job.title} on `{target}`: no changes, release {unchanged} stays live\n\n"
            f"This checkout is the code release {unchanged} was built from (the same "
            "fingerprint of every file dbt reads): nothing was built or released, and the "
            "releases kept for a rollback are as they were.\n"
        )
    return None


@dataclass
class _Run:
    """One release's build and publication, after its checks and its staged copy: the same
    steps through any engine's staging (release/staging.py)."""

    engine: Engine
    artifacts_dir: Path
    job: Job
    staging: Staging
    refresh: RefreshPlan | None
    env: dict[str, str]
    notes: list[str]
    lock: Any
    steps: list[Step] = field(default_factory=list)

    @property
    def project(self) -> Project:
        return self.engine.project

    @property
    def target(self) -> str:
        return self.engine.target

    @property
    def state_dir(self) -> Path:
        """Where the release's state is gathered before it is published."""
        return self.artifacts_dir.with_name(self.artifacts_dir.name + ".partial")

    def execute(self, clock: history.Job, summary: Path | None) -> int:
        state_dir = self.state_dir
        shutil.rmtree(state_dir, ignore_errors=True)
        state_dir.mkdir(parents=True)
        release_id = new_release_id()
        code = code_fingerprint(self.project)  # of what this release builds, before it builds
        try:
            ok, report = self._build_and_publish(release_id, code, clock)
        except BaseException:
            # a job that stopped on an error is a failed run too
            history.record_job(self.engine, clock, False, state_dir)
            raise
        finally:
            self.staging.discard()
            shutil.rmtree(state_dir, ignore_errors=True)
        print(report)
        write_summary(report, summary)
        if not ok:
            outcome = (
                "production left as it was" if self.staging.beside else "production built in place"
            )
            print(f"{self.job.name} on target '{self.target}' failed: {outcome}")
            return 1
        saved = [f for f in STATE_FILES if (self.artifacts_dir / f).exists()]
        print(f"production state for slim CI written to {self.artifacts_dir} ({', '.join(saved)})")
        return 0

    def _build_and_publish(
        self, release_id: str, code: str, clock: history.Job
    ) -> tuple[bool, str]:
        """The dbt steps in one dbt process that parses the project once, then the swap and
        the state. Returns (released, the report)."""
        job, state_dir = self.job, self.state_dir
        # A new runner has no target directory: dbt starts from the parse the live release
        # published, and parses only the files this release's code changed (a full parse costs
        # 7-11 s). dbt checks it against the profile, vars and files, and parses what differs.
        target_dir = self.project.target_dir
        share_parse(self.artifacts_dir / RELEASE_PARSE, target_dir / PARSE)
        with runner.session(self.engine, self.env) as dbt:
            plan, marks = self.plan()
            ok = self.build(plan, state_dir)
            if ok:  # this release's parse, published with its state for the next release
                share_parse(target_dir / PARSE, state_dir / RELEASE_PARSE)
            if ok and job.monitoring:
                self.notes.append(self.monitoring_views())
            self._carry_over()
            # dbt's process holds no file between invocations: it stays for the CI parse
            return self.swap_and_record(release_id, code, marks, clock, ok, dbt)

    def monitoring_views(self) -> str:
        """The views over the run history, in the history's own store (no release swaps it):
        built, except by a deploy whose monitoring models have not changed since the live
        release (its job built them; 3-5 s of a one-mart deploy's way to production). The
        nightly builds them and runs their tests on the history every day."""
        live = self.artifacts_dir / "manifest.json"
        if self.job is DEPLOY and live.is_file():
            new = artifacts.load_json(self.state_dir / "manifest.json", "manifest")
            old = artifacts.load_json(live, "production manifest")
            if _monitoring_nodes(new) == _monitoring_nodes(old):
                described = (published_state(self.artifacts_dir) or {}).get("release_id")
                return (f"monitoring models unchanged since release {described}: kept as they "
                        "are")  # fmt: skip
        return monitoring.build(self.engine, self.env)[1]

    def swap_and_record(
        self, release_id: str, code: str, marks: dict[str, list[Any]], clock: history.Job,
        ok: bool, dbt: runner.DbtSession,
    ) -> tuple[bool, str]:  # fmt: skip
        """After the builds (``ok``: all passed): the swap, the parse for slim CI in the job's
        dbt process (``dbt``, closed here), the report, the published state and the run
        history, in one process or as `release publish`."""
        job, state_dir = self.job, self.state_dir
        if ok:
            ok = self.publish(release_id, code, marks)
        if ok:
            live = (
                f"production live {time.perf_counter() - clock.clock:.1f} s after the job started"
            )
            print(f"release {release_id}: {live}", flush=True)  # as it happens, for the log
            self.notes.append(live)
            # after the swap: nothing production needs waits for it, and a failure is a notice
            if self.staging.holds_live and self.refresh is None:
                self.notes.append(publish_ci_parse(self.project, dbt, self.artifacts_dir,
                                                   state_dir))  # fmt: skip
        dbt.close()
        self.notes.append(dbt.describe())
        report = _render(job.title, self.target, self.steps, ok, release_id,
                         staged=self.staging.beside, notes=self.notes)  # fmt: skip
        (state_dir / f"{job.name}.md").write_text(report)
        if ok:
            publish_state(state_dir, self.artifacts_dir)
            report += (f"\nstate published {time.perf_counter() - clock.clock:.1f} s after the "
                       "job started")  # fmt: skip
        # the history outlives the release (its own file on DuckDB, its own schema on a server)
        report += "\n" + history.record_job(
            self.engine, clock, ok, self.artifacts_dir if ok else state_dir,
            release_id if ok else None, database=self.staging.history_database,
        )  # fmt: skip
        return ok, report

    def _carry_over(self) -> None:
        """What this job did not redo, from the state it replaces (the evaluator runs after)."""
        parses = self.artifacts_dir.glob(CI_PARSE.format(target="*"))
        for name in [*CARRIED_OVER, *(p.name for p in parses)]:
            if not (self.state_dir / name).exists() and (self.artifacts_dir / name).is_file():
                shutil.copy2(self.artifacts_dir / name, self.state_dir / name)

    def plan(self) -> tuple[list[tuple[str, list[str]]], dict[str, list[Any]]]:
        """The dbt steps of this release, and what they read of the raw data."""
        job, refresh = self.job, self.refresh
        notes, holds_live = self.notes, self.staging.holds_live
        build_args = ["build", "--full-refresh"] if job.full_refresh else ["build"]
        if refresh and holds_live:
            # what the new rows reach; the staged copy holds the rest as it is live (on
            # PostgreSQL green holds only the incremental tables: it builds everything)
            build_args += ["--select", *refresh.selection]
            notes.append(
                f"rebuilds what the new rows reach: {len(refresh.selection)} selectors "
                "(downstream of the raw tables with new rows, and of the models that read the "
                "clock); seeds and everything else kept as they are live"
            )
        if refresh:
            # unit tests prove the code, which the release of this same code already did
            build_args += ["--exclude", "package:dbt_project_evaluator", MONITORING,
                           "resource_type:unit_test", *refresh.excluded]  # fmt: skip
        plan = [("build", build_args)]
        if job.freshness:
            # the loaders' sources; the run history's own freshness is the morning report's
            plan.append(("freshness", ["source", "freshness", "--select", "source:*",
                                       "--exclude", "source:monitoring"]))  # fmt: skip
        if job.docs:
            plan.append(DOCS_STEP)
        # what the build reads of the raw data: a deploy that keeps models as they are live
        # keeps what they read (the next refresh adds the rest)
        marks = refresh.marks if refresh else raw_marks(self.engine)
        if job is DEPLOY and holds_live:  # green starts empty: it builds everything
            plan = _deploy_plan(self.engine, self.artifacts_dir, self.env, notes,
                                self.staging)  # fmt: skip
            if plan[0] != ("build", ["build", "--full-refresh"]):  # not everything rebuilt
                live_marks = (published_state(self.artifacts_dir) or {}).get("raw")
                marks = live_marks if live_marks is not None else marks
        parsed = self.staging.after_parse(self.env, refresh is not None, notes)
        if parsed:  # staging needed the parse, and it failed
            self.steps.append(Step("parse", parsed.command, False, parsed.elapsed_s,
                                   [parsed.error or "dbt parse failed"]))  # fmt: skip
            plan = []
        return plan, marks

    def build(self, plan: list[tuple[str, list[str]]], state_dir: Path) -> bool:
        """Run the plan's dbt steps, each retried on transient errors, until one fails."""
        project = self.project
        for name, args in plan:
            result = run_with_retries(self.engine, args, self.env, self.notes)
            step = Step(name, result.command, result.success, result.elapsed_s)
            _collect(project.target_dir, name, result, state_dir, step)
            if name == DOCS_STEP[0] and step.ok and "--select" in args:
                merged = release_docs.write_narrowed(project.target_dir, self.artifacts_dir,
                                                     state_dir)  # fmt: skip
                self.notes.append(merged)
            if not step.ok and not step.problems and result.error:
                step.problems = [result.error]
            self.steps.append(step)
            if not step.ok:
                break
        if (project.target_dir / "manifest.json").exists():
            shutil.copy2(project.target_dir / "manifest.json", state_dir / "manifest.json")
        return bool(plan) and all(s.ok for s in self.steps) and len(self.steps) == len(plan)

    def publish(self, release_id: str, code: str, marks: dict[str, list[Any]]) -> bool:
        """Stamp the staged release with its state, then swap it in (the release's one
        atomic step). False, with the reason in the notes, when the swap gave up; whatever
        fails after the swap is a warning: the release is live."""
        project, state_dir, staging = self.project, self.state_dir, self.staging
        manifest = artifacts.load_json(state_dir / "manifest.json", "manifest")
        if staging.beside:
            self.notes.append(staging.drop_removed(manifest, state_dir))
        write_record(
            state_dir, release_id, self.job.name, project.vars, {"code": code, "raw": marks}
        )
        stamp = Stamp(release_id, None, self.job.name, code, history.git_revision(project),
                      data_code=data_fingerprint(manifest, project.vars))  # fmt: skip
        (state_dir / f"{self.job.name}.md").write_text(
            _render(self.job.title, self.target, self.steps, True, release_id, True, self.notes)
        )
        try:
            staging.swap(stamp, state_dir, self.lock, self.notes)
        except MediaPulseError as exc:
            if staging.live_release_id() != release_id:
                self.notes.append(f"swap gave up: {exc}")
                return False
            # the commit's answer was lost, but the warehouse says the swap happened
            self.notes.append(f"warning: {exc}; but production is release {release_id}")
        if not staging.beside:
            return True
        failpoints.reach("release.after-swap")
        self.notes.append(staging.kept_note())
        return True


def _monitoring_nodes(manifest: dict[str, Any]) -> dict[str, Any]:
    """What defines the monitoring views in a manifest: each model's and test's code, config
    and inputs, and the run history's sources (pure)."""
    nodes = {
        uid: (node.get("checksum"), node.get("config"), node.get("depends_on"))
        for uid, node in manifest.get("nodes", {}).items()
        if node.get("original_file_path", "").startswith(MONITORING.removeprefix("path:"))
    }
    sources = {
        uid: (source.get("columns"), source.get("config"), source.get("identifier"))
        for uid, source in manifest.get("sources", {}).items()
        if source.get("source_name") == history.SCHEMA
    }
    return {**nodes, **sources}


def _collect(target_dir: Path, name: str, result: DbtRun, state_dir: Path, step: Step) -> None:
    """What a dbt step leaves for the state it publishes, and its problems for the report."""
    results = target_dir / "run_results.json"
    if name in ("build", "unit tests") and results.exists():
        step.problems = [r.describe() for r in artifacts.node_results(target_dir) if r.failed]
        if name == "build":
            shutil.copy2(results, state_dir / "run_results.json")
    elif name == "freshness":
        errors, warnings = _freshness_problems(target_dir)
        step.ok = not errors and (result.success or not result.error)
        step.problems = errors + warnings
        shutil.copy2(target_dir / "sources.json", state_dir / "sources.json")
    elif name == "docs" and result.success:
        for produced in (release_docs.CATALOG, release_docs.STATIC_DOCS):
            shutil.copy2(target_dir / produced, state_dir / produced)


def rollback(engine: Engine, state_dir: Path, to: str | None = None) -> str:
    """Put back a kept release (``to``, or the newest built from other code than the live
    one) and the state it published, holding the release lock. Returns what was done."""
    engine.require(Capability.STAGED_RELEASES, "rollback")
    check_release_target(engine)
    with release_lock(engine, "rollback"):
        refuse_if_staged(state_dir, "rollback")
        repaired = repair_state(engine, state_dir)
        if repaired and to is None:
            # a job (a rollback, perhaps) stopped after its swap: what is live is not what the
            # state said, so "the release before the last change of code" is not what the
            # operator saw when they asked
            raise MediaPulseError(
                f"{repaired.removeprefix('notice: ')}; not rolling back further without "
                "--to RELEASE_ID: check `mediapulse releases`, then pass --to"
            )
        return staging_for(engine).rollback(state_dir, to)


def list_releases(engine: Engine) -> str:
    """The live release and the ones kept for a rollback, newest first (`mediapulse
    releases`)."""
    engine.require(Capability.STAGED_RELEASES, "releases")
    check_release_target(engine)
    live, kept = staging_for(engine).releases()
    lines = [f"live: {live.describe() if live else 'no release'}"]
    default = None
    with suppress(MediaPulseError):
        default = choose_rollback(live, kept, None).release_id
    for stamp in kept:
        marks = []
        if stamp.release_id == default:
            marks.append("`mediapulse rollback` restores this one")
        if stamp.incomplete:
            marks.append(f"incomplete: {stamp.incomplete}")
        lines.append(f"kept: {stamp.describe()}" + (f" <- {'; '.join(marks)}" if marks else ""))
    return "\n".join(lines)


def _render(
    title: str,
    target: str,
    steps: list[Step],
    ok: bool,
    release_id: str,
    staged: object,
    notes: list[str] | None = None,
) -> str:
    if ok:
        verdict = f"passed, release {release_id} is live"
    elif staged:
        verdict = "FAILED, production unchanged"
    else:  # built in place: what the failed run reached is already in production
        verdict = "FAILED, production was built in place and may be partly rebuilt"
    rows = [
        (s.name, "ok" if s.ok else "failed", f"{s.seconds:.0f} s", f"`{s.command}`") for s in steps
    ]
    lines = [f"## {title} on `{target}`: {verdict}", "", markdown_table(
        ("step", "result", "time", "command"), rows
    )]  # fmt: skip
    if notes:
        lines += ["", *notes]
    for step in steps:
        if step.problems:
            lines += ["", f"### {step.name}", *[f"- {p}" for p in step.problems]]
    return "\n".join(lines) + "\n"


def check_artifacts_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise MediaPulseError(f"--artifacts {path} is a file: pass a directory")
    return path
