"""`mediapulse slim-ci`: build and test only what a change touches, reading the rest from prod.

dbt computes everything here: `state:modified` (against the production manifest), the
downstream closure, contract breaking-change detection and `--defer`. This module asks dbt
for the plan (`dbt ls`), prints it, runs `dbt build` into a throwaway CI warehouse with the
production file attached read-only, and writes a Markdown summary.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediapulse import artifacts, datadiff, history, prepare, runner
from mediapulse.errors import MediaPulseError
from mediapulse.project import Project
from mediapulse.release import CI_PARSE, RELEASE_FILE
from mediapulse.report import markdown_table, write_summary
from mediapulse.runner import run_dbt

BUILDABLE = ("model", "seed", "snapshot")
EXCLUDE = ["--exclude", "package:dbt_project_evaluator"]
# dbt only warns about a breaking change to an unversioned contracted model; in CI it must fail
BREAKING_IS_ERROR = ["--warn-error-options", '{"error": ["UnversionedBreakingChange"]}']
DEFAULT_SELECT = "state:modified+"


@dataclass(frozen=True)
class Plan:
    state: Path | None
    selected: tuple[str, ...]  # unique ids of models, seeds, snapshots to build
    modified: tuple[str, ...]
    deferred: tuple[str, ...]  # unchanged parents read from production
    tests: int  # data and unit tests that run
    modified_tests: tuple[str, ...] = ()  # tests dbt marks modified: they run whatever else does
    changed_vars: tuple[str, ...] = ()  # vars whose value differs from production's
    var_users: tuple[str, ...] = ()  # nodes selected because they read a changed var
    modified_exposures: tuple[str, ...] = ()  # their parents' tests run
    modified_sources: tuple[str, ...] = ()  # their children are rebuilt
    selection: tuple[str, ...] = ()  # what `dbt build --select` gets
    # unit tests whose model is not rebuilt: `dbt build` runs a unit test only together with
    # its model, so these run in a `dbt test` of their own
    standalone_unit_tests: tuple[str, ...] = ()
    standalone_selection: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()
    # the run history's models the selected ones read, built in CI instead of deferred to
    # production (DuckDB: production's are in a history file a CI run does not attach)
    history_parents: tuple[str, ...] = ()

    @property
    def downstream(self) -> tuple[str, ...]:
        return tuple(
            n for n in self.selected if n not in self.modified and n not in self.history_parents
        )

    @property
    def empty(self) -> bool:
        return not self.selected and not self.tests

    @property
    def needs_build(self) -> bool:
        return bool(self.selected) or self.tests > len(self.standalone_unit_tests)


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


def describe_breaking_change(error: str) -> str:
    """dbt's multi-line contract error as one line naming the model and the columns."""
    model = re.search(r"(?:in|unversioned) (?:model|node) ([\w.]+)", error)
    changes = re.sub(
        r"\s+", " ", re.split(r"breaking change to an? [\w ]+?\.", error, maxsplit=1)[-1]
    )
    changes = changes.split("Consider making", 1)[0].strip(" -")
    where = f"model {model.group(1)}" if model else "a contracted model"
    return (
        f"breaking change to the contract of {where}: {changes}; restore the column, or add a "
        "new model version and deprecate the old one"
    )


def _ls(project: Project, args: list[str], target: str, env: dict[str, str]) -> list[dict]:
    result = run_dbt(
        project,
        [
            "ls",
            *args,
            *BREAKING_IS_ERROR,
            "--output",
            "json",
            "--output-keys",
            "unique_id resource_type",
        ],
        target=target,
        extra_env=env,
        capture_events=["PrintEvent"],
        quiet=True,
    )
    if not result.success:
        error = result.error or "see the output above"
        if "breaking change to" in error.lower():
            raise MediaPulseError(describe_breaking_change(error), exit_code=1)
        raise MediaPulseError(f"dbt could not list nodes: {error.splitlines()[0]}")
    return [json.loads(m) for m in result.messages if m.startswith("{")]


def changed_vars(current: dict[str, Any], production: dict[str, Any]) -> list[str]:
    """Names of the project vars added, removed or changed since production (pure)."""

    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    names = set(current) | set(production)
    return sorted(
        n for n in names
        if n not in current or n not in production
        or canonical(current[n]) != canonical(production[n])
    )  # fmt: skip


def nodes_reading_vars(manifest: dict[str, Any], names: list[str]) -> dict[str, set[str]]:
    """Which nodes read which of ``names``: in their SQL, their test arguments, their config,
    or any macro they call, however deeply (pure). dbt records none of this."""
    if not names:
        return {}
    patterns = {n: re.compile(r"""\bvar\(\s*['"]""" + re.escape(n) + r"""['"]""") for n in names}
    macros = manifest.get("macros", {})
    memo: dict[str, set[str]] = {}

    def found_in(text: str) -> set[str]:
        return {n for n, pattern in patterns.items() if pattern.search(text)}

    def macro_vars(uid: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if uid in memo:
            return memo[uid]
        macro = macros.get(uid) or {}
        found = found_in(macro.get("macro_sql", ""))
        for child in (macro.get("depends_on") or {}).get("macros", []):
            if child not in seen:
                found |= macro_vars(child, seen | {uid})
        memo[uid] = found
        return found

    users: dict[str, set[str]] = {}
    for uid, node in {**manifest.get("nodes", {}), **manifest.get("unit_tests", {})}.items():
        text = " ".join(
            _strings([node.get(k) for k in ("raw_code", "test_metadata", "unrendered_config")])
        )
        found = found_in(text)
        for macro in (node.get("depends_on") or {}).get("macros", []):
            found |= macro_vars(macro)
        if found:
            users[uid] = found
    return users


def _strings(value: Any) -> list[str]:
    """Every string inside nested lists and dicts (test arguments, configs)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _selector(node: dict[str, Any], with_children: bool) -> str:
    """A dbt selection for exactly this node (by its full fqn), and its children with ``+``."""
    return "fqn:" + ".".join(node["fqn"]) + ("+" if with_children else "")


def _is_test(unique_id: str) -> bool:
    return unique_id.split(".")[0] in ("test", "unit_test")


def _production_vars(state: Path) -> dict[str, Any] | None:
    record = state / RELEASE_FILE
    if not record.is_file():
        return None
    data = artifacts.load_json(record, "production release record")
    return data.get("vars") if isinstance(data.get("vars"), dict) else None


def history_parents(manifest: dict[str, Any], selected: list[str]) -> list[str]:
    """The models in the run history's DuckDB catalog that the selected ones read, however
    deeply, and that are not selected themselves (pure).

    Production's monitoring views live in production's history file, which a CI run does not
    attach: there, catalog `monitoring` is the CI target's own history. Deferred to, they
    would be looked up in the wrong file ("relation doesn't exist"), so CI builds them too,
    over its own run history (views: a few milliseconds each)."""
    nodes = manifest["nodes"]
    chosen = set(selected)
    found: set[str] = set()
    todo = [u for u in selected if nodes.get(u, {}).get("database") == history.CATALOG]
    while todo:
        for parent in manifest["parent_map"].get(todo.pop(), []):
            node = nodes.get(parent) or {}
            if node.get("resource_type") != "model" or node.get("database") != history.CATALOG:
                continue
            if parent not in chosen and parent not in found:
                found.add(parent)
                todo.append(parent)
    return sorted(found)


def make_plan(
    project: Project,
    state: Path,
    select: str | None,
    target: str,
    env: dict[str, str],
    own_history: bool = False,
) -> Plan:
    """What to build and test against production: dbt's `state:modified+`, plus what dbt does
    not see (nodes reading a changed var, the tests of what a changed exposure reads).
    ``own_history``: the target's run history is not production's (slim CI on DuckDB), so the
    monitoring models the selection reads are built too, never deferred to production."""
    base = ["--state", str(state), *EXCLUDE]
    modified_any = {
        n["unique_id"]: n["resource_type"]
        for n in _ls(project, ["--select", "state:modified", *base], target, env)
    }
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    production = artifacts.load_json(state / "manifest.json", "production manifest")
    nodes = {**manifest["nodes"], **manifest.get("unit_tests", {})}
    selection = [select or DEFAULT_SELECT]
    notices: list[str] = []
    vars_changed: list[str] = []
    var_users: list[str] = []
    exposures = sorted(u for u, kind in modified_any.items() if kind == "exposure")
    if select is None:
        production_vars = _production_vars(state)
        if production_vars is None:
            notices.append(
                "the production state records no vars (published before vars were recorded): "
                "a changed var is not detected until the next nightly or deploy"
            )
        else:
            vars_changed = changed_vars(project.vars, production_vars)
            readers = nodes_reading_vars(manifest, vars_changed)
            # packages' nodes (dbt-project-evaluator's) are not part of slim CI at all
            ours = manifest["metadata"]["project_name"]
            var_users = sorted(u for u in readers if nodes[u].get("package_name") == ours)
            selection += [_selector(nodes[u], not _is_test(u)) for u in var_users]
        for exposure in exposures:
            for parent in manifest["exposures"][exposure]["depends_on"]["nodes"]:
                selection += [
                    _selector(nodes[child], False)
                    for child in manifest["child_map"].get(parent, [])
                    if child.startswith("test.") and child in nodes
                ]
    everything = _ls(project, ["--select", *selection, *base], target, env)
    selected = [n["unique_id"] for n in everything if n["resource_type"] in BUILDABLE]
    parents = history_parents(manifest, selected) if own_history else []
    if parents:  # again with them: their tests come along, and nothing is deferred to them
        selection += [_selector(nodes[u], False) for u in parents]
        everything = _ls(project, ["--select", *selection, *base], target, env)
        selected = [n["unique_id"] for n in everything if n["resource_type"] in BUILDABLE]
    tests = [n["unique_id"] for n in everything if n["resource_type"] in ("test", "unit_test")]
    chosen = set(selected)
    standalone = [
        t for t in tests
        if t.startswith("unit_test.")
        and not set(nodes[t]["depends_on"]["nodes"]) & chosen
    ]  # fmt: skip
    deferred = sorted(
        {
            parent
            for node in selected + tests
            for parent in manifest["parent_map"].get(node, [])
            if parent not in chosen
            and parent.split(".")[0] in BUILDABLE
            and parent in production["nodes"]
            # ephemeral models are compiled into their children, never read from a warehouse
            and manifest["nodes"][parent]["config"].get("materialized") != "ephemeral"
        }
    )
    return Plan(
        state=state,
        selected=tuple(selected),
        modified=tuple(n for n in selected if n in modified_any),
        deferred=tuple(deferred),
        tests=len(tests),
        modified_tests=tuple(t for t in tests if t in modified_any),
        changed_vars=tuple(vars_changed),
        var_users=tuple(var_users),
        modified_exposures=tuple(exposures),
        modified_sources=tuple(sorted(u for u, k in modified_any.items() if k == "source")),
        selection=tuple(selection),
        standalone_unit_tests=tuple(standalone),
        standalone_selection=tuple(_selector(nodes[t], False) for t in standalone),
        notices=tuple(notices),
        history_parents=tuple(parents),
    )


def node_name(unique_id: str) -> str:
    """A node's name as users see it: `dim_users_v2` for version 2 of dim_users (its relation),
    a test's name without the hash dbt appends to generic tests' ids."""
    parts = unique_id.split(".")
    if parts[0] == "source":
        return ".".join(parts[2:])  # source.<project>.<source>.<table>
    if parts[0] == "test" and len(parts) > 3:
        return parts[2]  # a generic test's id ends with a hash of its arguments
    if len(parts) > 3 and re.fullmatch(r"v\d+", parts[-1]):
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


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
    project: Project,
    state_dir: Path | None,
    target: str = "ci",
    select: str | None = None,
    prod_warehouse: Path | None = None,
    summary: Path | None = None,
) -> int:
    if project.target_type(target) != "duckdb":  # a shared server: never production's schemas
        from mediapulse.pg_access import ci_schema

        ci_schema(project, target, "slim CI builds only in a CI run's own schemas")
    (project.target_dir / datadiff.PLAN_FILE).unlink(missing_ok=True)  # this run's, or none
    clock = history.Job("slim-ci", target)
    state = find_state(state_dir)
    env = prepare.target_env(project, target, prod_warehouse, need_prod=state is not None)
    seed_parse(project, state, target)
    (project.target_dir / "run_results.json").unlink(missing_ok=True)  # this run's, or none
    # dbt starts (and imports itself) while the job checks packages and data
    with runner.session(project, target, env) as dbt:
        prepare.prepare(project, target)
        code = _slim_ci(project, state, state_dir, target, select, env, summary, dbt)
    if project.target_type(target) == "duckdb":
        # the CI warehouse's own history; on a server a CI run's schemas are dropped after it
        # and production's history is never a pull request's to write
        print(history.record_job(project, target, clock, code == 0, project.target_dir))
    return code


def seed_parse(project: Project, state: Path | None, target: str) -> bool:
    """Start dbt from production's parse of its code for this target (published with the
    state) when this checkout has no parse of its own, as on a fresh runner: dbt then parses
    only what the pull request changed. dbt itself refuses a parse made for another profile,
    vars or dbt version and parses everything (the report says why)."""
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
    project: Project,
    state: Path | None,
    state_dir: Path | None,
    target: str,
    select: str | None,
    env: dict[str, str],
    summary: Path | None,
    dbt: runner.DbtSession,
) -> int:
    """The plan and its builds, every dbt call in one session (the project parsed once)."""
    if state is None:
        where = f"at {state_dir}" if state_dir else "(no --state given)"
        print(f"notice: no production state {where}: running a full build instead of slim CI")
        plan = Plan(state=None, selected=(), modified=(), deferred=(), tests=0)
        # everything a plain `dbt build` builds (selectors.yml: not the monitoring views, which
        # read the run history jobs write), or the selection asked for
        everything = ["--exclude", *EXCLUDE[1:], "path:models/monitoring"]
        invocations = [["build", *everything] + (["--select", select] if select else [])]
        datadiff.save_plan(project, None, [], [])
    else:
        try:
            # DuckDB: catalog `monitoring` is this target's own run history, not production's
            own_history = project.target_type(target) == "duckdb"
            plan = make_plan(project, state, select, target, env, own_history)
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
            return 0
        defer = [*EXCLUDE, "--defer", "--state", str(state)]
        invocations = []
        if plan.needs_build:
            invocations.append(["build", "--select", *plan.selection, *defer])
        if plan.standalone_unit_tests:
            invocations.append(["test", "--select", *plan.standalone_selection, *defer])
    print(render_plan(plan))
    if project.target_type(target) == "duckdb":
        ci_file = project.duckdb_path(target)
        for leftover in (ci_file, ci_file.with_name(ci_file.name + ".wal")):
            leftover.unlink(missing_ok=True)  # a fresh CI warehouse per run
    else:  # a server: this run's own schemas, fresh (refuses a target that is not CI's)
        from mediapulse.pg_access import drop_ci_schemas

        print(drop_ci_schemas(project, target))
    started = time.perf_counter()
    ok, error, results = _run_all(project, invocations, target, env)
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


def _run_all(
    project: Project, invocations: list[list[str]], target: str, env: dict[str, str]
) -> tuple[bool, str | None, list[artifacts.NodeResult]]:
    """Run each dbt invocation; (all succeeded, the first error, every node's result).

    The results of all of them are written as one target/run_results.json, so whatever reads
    "the last run" afterwards sees everything this slim CI ran."""
    run_results = project.target_dir / "run_results.json"
    ok, error = True, None
    merged: dict | None = None
    for args in invocations:
        run_results.unlink(missing_ok=True)
        result = run_dbt(project, args, target=target, extra_env=env)
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
