"""`mediapulse slim-ci`: build and test only what a change touches, reading the rest from prod.

dbt computes everything here: `state:modified` (against the production manifest), the
downstream closure, contract breaking-change detection and `--defer`. This module asks dbt
for the plan (`dbt ls`), prints it, runs `dbt build` into a throwaway CI warehouse with the
production file attached read-only, and writes a Markdown summary.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from mediapulse.ci import datadiff
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.markdown import markdown_table, write_summary
from mediapulse.core.project import Project
from mediapulse.dbt import artifacts, runner
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.base import Engine
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.jobs import prepare
from mediapulse.monitoring import history
from mediapulse.release.plan import BUILDABLE, EXCLUDE, Plan, make_plan, node_name
from mediapulse.release.state import CI_PARSE
from mediapulse.security.pg_access import ci_schema, drop_ci_schemas


def find_state(state_dir: Path | None) -> Path | None:
    """The production state to compare with; None when there is none yet (first run)."""
    if state_dir is None or not state_dir.exists():
        return None
    if not state_dir.is_dir():
        raise MediaPulseError(f"--state {state_dir} is a file: pass the artifacts directory")
    if not any(state_dir.iterdir()):
        return None
    manifest = artifacts.load_json(state_dir / "manifest.json", "production manifest (--state)")
    version = str(manifest.get("metadata", {}).get("dbt_schema_version", ""))
    if "manifest" not in version or "nodes" not in manifest:
        raise MediaPulseError(
            f"{state_dir / 'manifest.json'} is not a dbt manifest: pass the directory "
            "`mediapulse nightly --artifacts` wrote"
        )
    return state_dir


def _names(ids: tuple[str, ...]) -> str:
    return ", ".join(node_name(i) for i in ids) or "none"


def render_plan(plan: Plan) -> str:
    if plan.state is None:
        return "## Slim CI plan\n\nNo production state: full build of the project.\n"
    rows = [
        ("modified", len(plan.modified), _names(plan.modified)),
        ("downstream", len(plan.downstream), _names(plan.downstream)),
        ("modified tests", len(plan.modified_tests), _names(plan.modified_tests)),
    ]
    if plan.modified_sources:
        rows.append(("modified sources", len(plan.modified_sources),
                     _names(plan.modified_sources)))  # fmt: skip
    if plan.changed_vars:
        rows.append(("vars changed", len(plan.changed_vars), ", ".join(plan.changed_vars)))
        rows.append(("reading them", len(plan.var_users), _names(plan.var_users)))
    if plan.modified_exposures:
        rows.append(("modified exposures (their inputs' tests run)",
                     len(plan.modified_exposures), _names(plan.modified_exposures)))  # fmt: skip
    if plan.history_parents:
        rows.append(("run history models they read, built over this target's history",
                     len(plan.history_parents), _names(plan.history_parents)))  # fmt: skip
    rows += [
        ("deferred to production", len(plan.deferred), _names(plan.deferred)),
        ("tests", plan.tests, "every test of the built nodes, and the modified tests"),
    ]
    text = "## Slim CI plan\n\n" + markdown_table(("", "count", "nodes"), rows) + "\n"
    if plan.notices:
        text += "\n" + "\n".join(f"- notice: {n}" for n in plan.notices) + "\n"
    return text


def render_results(results: list[artifacts.NodeResult], seconds: float) -> str:
    rows = [
        (r.name, r.resource_type, r.status, f"{r.execution_time:.2f} s")
        for r in results
        if r.resource_type in (*BUILDABLE, "test", "unit_test")
    ]
    failed = [r.describe() for r in results if r.failed]
    warned = [r.describe() for r in results if r.status == "warn"]
    verdict = "failed" if failed else "passed"
    text = f"## Slim CI results: {verdict} in {seconds:.0f} s\n\n"
    if failed:
        text += "### Failures\n\n" + "\n".join(f"- {f}" for f in failed) + "\n\n"
    if warned:
        text += "### Warnings\n\n" + "\n".join(f"- {w}" for w in warned) + "\n\n"
    text += "<details><summary>Every node</summary>\n\n"
    text += markdown_table(("node", "type", "status", "time"), rows) + "\n\n</details>\n"
    return text


def run_slim_ci(
    engine: Engine,
    state_dir: Path | None,
    select: str | None = None,
    prod_warehouse: Path | None = None,
    summary: Path | None = None,
) -> int:
    project, target = engine.project, engine.target
    if not engine.embedded:  # a shared server: never production's schemas
        ci_schema(engine, "slim CI builds only in a CI run's own schemas")
    (project.target_dir / datadiff.PLAN_FILE).unlink(missing_ok=True)  # this run's, or none
    clock = history.Job("slim-ci", target)
    state = find_state(state_dir)
    env = prepare.target_env(engine, prod_warehouse, need_prod=state is not None)
    seed_parse(engine, state)
    (project.target_dir / "run_results.json").unlink(missing_ok=True)  # this run's, or none
    # dbt starts (and imports itself) while the job checks packages and data
    with runner.session(engine, env) as dbt:
        prepare.prepare(engine)
        code = _slim_ci(engine, state, state_dir, select, env, summary, dbt)
    if engine.embedded:
        # the CI warehouse's own history; on a server a CI run's schemas are dropped after it
        # and production's history is never a pull request's to write
        print(history.record_job(engine, clock, code == 0, project.target_dir))
    return code


def seed_parse(
    engine: Engine,
    state: Path | None,
) -> bool:
    """Start dbt from production's parse of its code for this target (published with the
    state) when this checkout has no parse of its own, as on a fresh runner: dbt then parses
    only what the pull request changed. dbt itself refuses a parse made for another profile,
    vars or dbt version and parses everything (the report says why)."""
    project, target = engine.project, engine.target
    if state is None:
        return False
    published = state / CI_PARSE.format(target=target)
    saved = project.target_dir / "partial_parse.msgpack"
    if not published.is_file() or saved.exists():
        return False
    saved.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(published, saved)
    return True


def _slim_ci(
    engine: Engine,
    state: Path | None,
    state_dir: Path | None,
    select: str | None,
    env: dict[str, str],
    summary: Path | None,
    dbt: runner.DbtSession,
) -> int:
    """The plan and its builds, every dbt call in one session (the project parsed once)."""
    project = engine.project
    if state is None:
        plan, invocations = _full_build(project, state_dir, select)
    else:
        planned = _slim_plan(engine, state, select, env, summary)
        if planned is None:
            return 0  # nothing to build: reported
        plan, invocations = planned
    print(render_plan(plan))
    _fresh_warehouse(engine)
    started = time.perf_counter()
    ok, error, results = _run_all(engine, invocations, env)
    seconds = time.perf_counter() - started
    report = render_plan(plan) + "\n" + render_results(results, seconds) + f"\n{dbt.describe()}\n"
    written = write_summary(report, summary)
    print(dbt.describe())
    for line in (r.describe() for r in results if r.failed):
        print(f"  {line}")
    if written:
        print(f"summary written to {written}")
    if ok:
        return 0
    if error and not any(r.failed for r in results):
        raise MediaPulseError(f"dbt build failed: {error.splitlines()[0]}")
    return 1


def _full_build(
    project: Project, state_dir: Path | None, select: str | None
) -> tuple[Plan, list[list[str]]]:
    """Without a production state (a first run): what a plain `dbt build` builds."""
    where = f"at {state_dir}" if state_dir else "(no --state given)"
    print(f"notice: no production state {where}: running a full build instead of slim CI")
    plan = Plan(state=None, selected=(), modified=(), deferred=(), tests=0)
    # everything a plain `dbt build` builds (selectors.yml: not the monitoring views, which
    # read the run history jobs write), or the selection asked for
    everything = ["--exclude", *EXCLUDE[1:], "path:models/monitoring"]
    datadiff.save_plan(project, None, [], [])
    return plan, [["build", *everything] + (["--select", select] if select else [])]


def _slim_plan(
    engine: Engine,
    state: Path,
    select: str | None,
    env: dict[str, str],
    summary: Path | None,
) -> tuple[Plan, list[list[str]]] | None:
    """What the change touches, deferred to production for the rest; None (and the report
    written) when it touches nothing."""
    project = engine.project
    try:
        # DuckDB: catalog `monitoring` is this target's own run history, not production's
        own_history = engine.embedded
        plan = make_plan(engine, state, select, env, own_history)
    except MediaPulseError as exc:
        # the PR's summary and comment must say why, not only the job log
        write_summary(f"## Slim CI: failed before building\n\n- {exc}\n", summary)
        datadiff.save_plan(project, state, [], [], stopped=str(exc))
        raise
    prod_file = env.get(prepare.PROD_WAREHOUSE_ENV)
    datadiff.save_plan(project, state, list(plan.modified), list(plan.selected), prod_file)
    if plan.empty:
        if select:
            raise MediaPulseError(f"--select {select!r} matches no model, seed or snapshot")
        report = render_plan(plan) + "\nNo changes against production: nothing to build.\n"
        print(report)
        write_summary(report, summary)
        return None
    defer = [*EXCLUDE, "--defer", "--state", str(state)]
    invocations = []
    if plan.needs_build:
        invocations.append(["build", "--select", *plan.selection, *defer])
    if plan.standalone_unit_tests:
        invocations.append(["test", "--select", *plan.standalone_selection, *defer])
    return plan, invocations


def _fresh_warehouse(engine: Engine) -> None:
    """A CI run starts from nothing of an earlier run's."""
    project, target = engine.project, engine.target
    if engine.embedded:
        ci_file = duckdb_file(project, target)
        for leftover in (ci_file, ci_file.with_name(ci_file.name + ".wal")):
            leftover.unlink(missing_ok=True)  # a fresh CI warehouse per run
    else:  # a server: this run's own schemas, fresh (refuses a target that is not CI's)
        print(drop_ci_schemas(engine))


def _run_all(
    engine: Engine, invocations: list[list[str]], env: dict[str, str]
) -> tuple[bool, str | None, list[artifacts.NodeResult]]:
    """Run each dbt invocation; (all succeeded, the first error, every node's result).

    The results of all of them are written as one target/run_results.json, so whatever reads
    "the last run" afterwards sees everything this slim CI ran."""
    project = engine.project
    run_results = project.target_dir / "run_results.json"
    ok, error = True, None
    merged: dict | None = None
    for args in invocations:
        run_results.unlink(missing_ok=True)
        result = run_dbt(engine, args, extra_env=env)
        if not run_results.exists():
            raise MediaPulseError(f"dbt {args[0]} did not run: {result.error}")
        data = artifacts.load_json(run_results, "dbt run results")
        if merged is None:
            merged = data
        else:
            merged["results"] += data["results"]
            merged["elapsed_time"] = merged.get("elapsed_time", 0) + data.get("elapsed_time", 0)
        ok = ok and result.success
        error = error or (None if result.success else result.error)
    if merged is not None:
        run_results.write_text(json.dumps(merged))
    return ok, error, artifacts.node_results(project.target_dir)
