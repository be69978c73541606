"""What a change touches against production: dbt's `state:modified+` and what dbt does not
see (readers of a changed var, the tests of what a changed exposure reads). Slim CI builds
this plan in a throwaway warehouse; a deploy rebuilds it inside the staged release."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.base import Engine
from mediapulse.monitoring import history
from mediapulse.release.state import RELEASE_FILE

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


def _ls(engine: Engine, args: list[str], env: dict[str, str]) -> list[dict]:
    result = run_dbt(
        engine,
        [
            "ls",
            *args,
            *BREAKING_IS_ERROR,
            "--output",
            "json",
            "--output-keys",
            "unique_id resource_type",
        ],
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
    engine: Engine,
    state: Path,
    select: str | None,
    env: dict[str, str],
    own_history: bool = False,
) -> Plan:
    """What to build and test against production: dbt's `state:modified+`, plus what dbt does
    not see (nodes reading a changed var, the tests of what a changed exposure reads).
    ``own_history``: the target's run history is not production's (slim CI on DuckDB), so the
    monitoring models the selection reads are built too, never deferred to production."""
    project = engine.project
    base = ["--state", str(state), *EXCLUDE]
    modified_any = {
        n["unique_id"]: n["resource_type"]
        for n in _ls(engine, ["--select", "state:modified", *base], env)
    }
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    production = artifacts.load_json(state / "manifest.json", "production manifest")
    nodes = {**manifest["nodes"], **manifest.get("unit_tests", {})}
    selection = [select or DEFAULT_SELECT]
    vars_changed: list[str] = []
    var_users: list[str] = []
    notices: list[str] = []
    exposures = sorted(u for u, kind in modified_any.items() if kind == "exposure")
    if select is None:  # an explicit selection is the caller's own: nothing is added to it
        vars_changed, var_users, notices = _var_users(project, state, manifest, nodes)
        selection += [_selector(nodes[u], not _is_test(u)) for u in var_users]
        selection += _exposure_tests(manifest, nodes, exposures)
    everything = _ls(engine, ["--select", *selection, *base], env)
    parents = history_parents(manifest, _buildable(everything)) if own_history else []
    if parents:  # again with them: their tests come along, and nothing is deferred to them
        selection += [_selector(nodes[u], False) for u in parents]
        everything = _ls(engine, ["--select", *selection, *base], env)
    selected = _buildable(everything)
    tests = [n["unique_id"] for n in everything if n["resource_type"] in ("test", "unit_test")]
    standalone = _standalone_unit_tests(nodes, tests, set(selected))
    return Plan(
        state=state,
        selected=tuple(selected),
        modified=tuple(n for n in selected if n in modified_any),
        deferred=tuple(_deferred(manifest, production, selected, tests)),
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


def _buildable(listed: list[dict]) -> list[str]:
    return [n["unique_id"] for n in listed if n["resource_type"] in BUILDABLE]


def _var_users(
    project: Project, state: Path, manifest: dict[str, Any], nodes: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """(the vars changed since production, the project's nodes reading them, notices)."""
    production_vars = _production_vars(state)
    if production_vars is None:
        notice = (
            "the production state records no vars (published before vars were recorded): "
            "a changed var is not detected until the next nightly or deploy"
        )
        return [], [], [notice]
    changed = changed_vars(project.vars, production_vars)
    readers = nodes_reading_vars(manifest, changed)
    # packages' nodes (dbt-project-evaluator's) are not part of slim CI at all
    ours = manifest["metadata"]["project_name"]
    return changed, sorted(u for u in readers if nodes[u].get("package_name") == ours), []


def _exposure_tests(
    manifest: dict[str, Any], nodes: dict[str, Any], exposures: list[str]
) -> list[str]:
    """Selectors of the data tests on what the changed ``exposures`` read: dbt's
    `state:modified+` selects an exposure, not the tests of its parents."""
    return [
        _selector(nodes[child], False)
        for exposure in exposures
        for parent in manifest["exposures"][exposure]["depends_on"]["nodes"]
        for child in manifest["child_map"].get(parent, [])
        if child.startswith("test.") and child in nodes
    ]


def _standalone_unit_tests(nodes: dict[str, Any], tests: list[str], chosen: set[str]) -> list[str]:
    """The unit tests whose model is not rebuilt (`dbt build` would skip them)."""
    return [
        t for t in tests
        if t.startswith("unit_test.")
        and not set(nodes[t]["depends_on"]["nodes"]) & chosen
    ]  # fmt: skip


def _deferred(
    manifest: dict[str, Any], production: dict[str, Any], selected: list[str], tests: list[str]
) -> list[str]:
    """The unchanged parents the selection reads from production (dbt's `--defer`)."""
    chosen = set(selected)
    return sorted(
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
