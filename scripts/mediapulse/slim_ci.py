"""`mediapulse slim-ci`: build and test only what a change touches, reading the rest from prod.

dbt computes everything here: `state:modified` (against the production manifest), the
downstream closure, contract breaking-change detection and `--defer`. This module asks dbt
for the plan (`dbt ls`), prints it, runs `dbt build` into a throwaway CI warehouse with the
production file attached read-only, and writes a Markdown summary.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mediapulse import artifacts, build
from mediapulse.errors import MediaPulseError
from mediapulse.project import Project
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
    tests: int

    @property
    def downstream(self) -> tuple[str, ...]:
        return tuple(n for n in self.selected if n not in self.modified)


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


def make_plan(project: Project, state: Path, select: str, target: str, env: dict[str, str]) -> Plan:
    types = [arg for kind in BUILDABLE for arg in ("--resource-type", kind)]
    base = ["--state", str(state), *EXCLUDE]
    everything = _ls(project, ["--select", select, *base], target, env)
    selected = [n["unique_id"] for n in everything if n["resource_type"] in BUILDABLE]
    tests = [n for n in everything if n["resource_type"] in ("test", "unit_test")]
    modified = {
        n["unique_id"]
        for n in _ls(project, ["--select", "state:modified", *base, *types], target, env)
    }
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    production = artifacts.load_json(state / "manifest.json", "production manifest")
    chosen = set(selected)
    deferred = sorted(
        {
            parent
            for node in selected
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
        modified=tuple(n for n in selected if n in modified),
        deferred=tuple(deferred),
        tests=len(tests),
    )


def node_name(unique_id: str) -> str:
    """A node's name as its relation is named: `dim_users_v2` for version 2 of dim_users."""
    parts = unique_id.split(".")
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
        ("deferred to production", len(plan.deferred), _names(plan.deferred)),
        ("tests", plan.tests, "of the nodes built"),
    ]
    return "## Slim CI plan\n\n" + markdown_table(("", "count", "nodes"), rows) + "\n"


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
    build.prepare(project, target)
    state = find_state(state_dir)
    env = build.target_env(project, target, prod_warehouse, need_prod=state is not None)
    if state is None:
        where = f"at {state_dir}" if state_dir else "(no --state given)"
        print(f"notice: no production state {where}: running a full build instead of slim CI")
        plan = Plan(state=None, selected=(), modified=(), deferred=(), tests=0)
        args = ["build", *EXCLUDE] + (["--select", select] if select else [])
    else:
        try:
            plan = make_plan(project, state, select or DEFAULT_SELECT, target, env)
        except MediaPulseError as exc:
            # the PR's summary and comment must say why, not only the job log
            write_summary(f"## Slim CI: failed before building\n\n- {exc}\n", summary)
            raise
        if not plan.selected:
            if select:
                raise MediaPulseError(f"--select {select!r} matches no model, seed or snapshot")
            report = render_plan(plan) + "\nNo changes against production: nothing to build.\n"
            print(report)
            write_summary(report, summary)
            return 0
        args = [
            "build",
            "--select",
            select or DEFAULT_SELECT,
            *EXCLUDE,
            "--defer",
            "--state",
            str(state),
        ]
    print(render_plan(plan))
    if project.target_type(target) == "duckdb":
        ci_file = project.duckdb_path(target)
        for leftover in (ci_file, ci_file.with_name(ci_file.name + ".wal")):
            leftover.unlink(missing_ok=True)  # a fresh CI warehouse per run
    (project.target_dir / "run_results.json").unlink(missing_ok=True)
    started = time.perf_counter()
    result = run_dbt(project, args, target=target, extra_env=env)
    seconds = time.perf_counter() - started
    if not result.success and not (project.target_dir / "run_results.json").exists():
        raise MediaPulseError(f"dbt build did not run: {result.error}")
    results = artifacts.node_results(project.target_dir)
    report = render_plan(plan) + "\n" + render_results(results, seconds)
    written = write_summary(report, summary)
    for line in (r.describe() for r in results if r.failed):
        print(f"  {line}")
    if written:
        print(f"summary written to {written}")
    if result.success:
        return 0
    if result.error and not any(r.failed for r in results):
        raise MediaPulseError(f"dbt build failed: {result.error.splitlines()[0]}")
    return 1
