"""`mediapulse evaluate`: run dbt-project-evaluator and report what is structurally wrong.

dbt decides everything: the evaluator's models compute the violations into its fct_ tables,
and its tests (errors; warnings with DBT_PROJECT_EVALUATOR_SEVERITY=warn, or per rule in
dbt_project.yml) say which rules fail. We read both, group by category and rule, render
Markdown and JSON, and compare with a baseline so that only new violations fail a pull request.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.markdown import write_summary
from mediapulse.dbt import artifacts, runner
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.base import Capability, Engine
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.jobs import prepare
from mediapulse.security import pg_access

SEVERITY_ENV = "DBT_PROJECT_EVALUATOR_SEVERITY"
PACKAGE = "dbt_project_evaluator"
ROWS_MARKER = "MEDIAPULSE_EVALUATOR_ROWS "
# columns that name the offending node, in the order we prefer them for a label
_SUBJECT_COLUMNS = ("resource_name", "child", "parent", "directory_path", "source_name")


@dataclass(frozen=True)
class Violation:
    category: str  # the evaluator's folder: dag, documentation, governance, ...
    rule: str  # the fct_ model, e.g. fct_undocumented_models
    severity: str  # error or warn, as the rule's test is configured
    label: str  # the offending node(s), for humans
    key: str  # stable identity, for baselines
    row: dict[str, str | None]


def _is_number(value: str | None) -> bool:
    try:
        float(value or "")
        return True
    except ValueError:
        return False


def _label(row: dict[str, str | None]) -> str:
    if row.get("child") and row.get("parent"):
        return f"{row['child']} (from {row['parent']})"
    for column in _SUBJECT_COLUMNS:
        if row.get(column):
            return str(row[column])
    return ", ".join(f"{k}={v}" for k, v in row.items() if v is not None)


def _is_moment(value: str | None) -> bool:
    try:
        datetime.fromisoformat(value or "")
        return True
    except ValueError:
        return False


def _key(rule: str, row: dict[str, str | None]) -> str:
    """Identity across runs: the rule and the row's values, without the numbers and times
    that move from run to run (coverage percentages, `measured_at`)."""
    stable = {k: v for k, v in sorted(row.items()) if not (_is_number(v) or _is_moment(v))}
    return rule + " " + json.dumps(stable, sort_keys=True)


def collect(
    manifest: dict[str, Any], results: list[artifacts.NodeResult], rows: dict[str, list[dict]]
) -> list[Violation]:
    """Violations: the rows of every fct_ model whose evaluator test did not pass (pure)."""
    violations: list[Violation] = []
    seen: set[str] = set()
    for result in results:
        if result.resource_type != "test" or result.status in ("pass", "skipped"):
            continue
        node = manifest["nodes"].get(result.unique_id, {})
        if node.get("package_name") != PACKAGE:
            continue
        parents = [manifest["nodes"].get(p, {}) for p in node["depends_on"]["nodes"]]
        fct = next((p for p in parents if p.get("name", "").startswith("fct_")), None)
        if fct is None:
            continue
        severity = "error" if result.status in ("fail", "error") else "warn"
        category = fct["fqn"][2] if len(fct["fqn"]) > 3 else "other"
        for row in rows.get(fct["name"], []) or [{}]:
            key = _key(fct["name"], row)
            if key in seen:
                continue
            seen.add(key)
            violations.append(
                Violation(category, fct["name"], severity, _label(row) or fct["name"], key, row)
            )
    return sorted(violations, key=lambda v: (v.category, v.rule, v.label))


def compare(
    violations: list[Violation], baseline: dict[str, Any] | None
) -> tuple[list[Violation], list[dict[str, Any]]]:
    """(new violations, fixed ones) against a baseline report; no baseline: all are new."""
    if baseline is None:
        return violations, []
    before = {v["key"]: v for v in baseline.get("violations", [])}
    now = {v.key for v in violations}
    new = [v for v in violations if v.key not in before]
    fixed = [v for k, v in before.items() if k not in now]
    return new, fixed


def render_markdown(
    violations: list[Violation], new: list[Violation], fixed: list[dict], has_baseline: bool
) -> str:
    new_keys = {v.key for v in new}
    errors = sum(v.severity == "error" for v in violations)
    head = f"## dbt-project-evaluator: {len(violations)} violation(s)"
    head += f" ({errors} error, {len(violations) - errors} warn)"
    if has_baseline:
        head += f"; {len(new)} new, {len(fixed)} fixed against the baseline"
    lines = [head, ""]
    if not violations:
        lines.append("The project follows every rule the evaluator checks.")
    grouped: dict[str, dict[str, list[Violation]]] = defaultdict(lambda: defaultdict(list))
    for v in violations:
        grouped[v.category][v.rule].append(v)
    for category in sorted(grouped):
        lines += [f"### {category}", ""]
        for rule, items in sorted(grouped[category].items()):
            lines.append(f"- **{rule}** ({items[0].severity}, {len(items)}):")
            for v in items:
                marker = " **new**" if has_baseline and v.key in new_keys else ""
                lines.append(f"  - `{v.label}`{marker}")
        lines.append("")
    if fixed:
        lines += ["### fixed since the baseline", ""]
        lines += [f"- {f['rule']}: `{f['label']}`" for f in fixed]
    return "\n".join(lines).rstrip() + "\n"


def render_text(violations: list[Violation], new: list[Violation], fixed: list[dict]) -> str:
    new_keys = {v.key for v in new}
    lines = []
    current = None
    for v in violations:
        if v.category != current:
            current = v.category
            lines.append(f"[{current}]")
        mark = " (new)" if v.key in new_keys else ""
        lines.append(f"  {v.rule} [{v.severity}]: {v.label}{mark}")
    for f in fixed:
        lines.append(f"  fixed: {f['rule']}: {f['label']}")
    return "\n".join(lines)


def load_baseline(path: Path) -> dict[str, Any]:
    data = artifacts.load_json(path, "evaluator baseline (--baseline)")
    if not isinstance(data.get("violations"), list):
        raise MediaPulseError(
            f"{path} is not a `mediapulse evaluate --json` report (no violations list)"
        )
    return data


def run_evaluate(
    engine: Engine,
    json_path: Path,
    markdown_path: Path | None = None,
    baseline_path: Path | None = None,
) -> int:
    project, target = engine.project, engine.target
    baseline = None
    if baseline_path is not None and not baseline_path.exists():
        print(f"notice: no baseline at {baseline_path} (first run?): every violation counts")
    elif baseline_path is not None:
        baseline = load_baseline(baseline_path)
    engine = prepare.prepare(engine)
    if engine.can(Capability.CI_SCHEMAS) and engine.is_ci():
        # a CI run's schemas start empty: nothing another run (a pull request, which runs as
        # the same role) left under this run's names reaches the published report
        print(pg_access.drop_ci_schemas(engine))
    if engine.embedded:
        # the evaluator reads dbt's graph, not the models' tables: a fresh runner's target
        # (no file yet) is fine, a corrupt or locked one is not
        prepare.check_duckdb_file(duckdb_file(project, target), f"evaluate target '{target}'")
    # the severity is dbt_project.yml's default, or the caller's variable: set here, it would
    # differ from slim CI's and make dbt parse the whole project again
    env = prepare.target_env(engine)
    with runner.session(engine, env) as dbt:  # one parse for the build and the dump
        result = run_dbt(engine, ["build", "--selector", "project_evaluator"], extra_env=env)
        results = artifacts.node_results(project.target_dir)
        broken = [r.describe() for r in results if r.status == "error" or (
            r.resource_type == "model" and r.status not in ("success", "skipped"))]  # fmt: skip
        if broken:
            raise MediaPulseError(f"dbt-project-evaluator did not run: {broken[0]}")
        if not result.success and not any(r.status == "fail" for r in results):
            raise MediaPulseError(f"dbt-project-evaluator did not run: {result.error}")
        manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
        dump = run_dbt(
            engine,
            ["run-operation", "mediapulse_evaluator_rows"],
            extra_env=env,
            capture_events=["PrintEvent"],
            quiet=True,
        )
    print(dbt.describe())
    payload = next((m for m in dump.messages if m.startswith(ROWS_MARKER)), None)
    if not dump.success or payload is None:
        raise MediaPulseError(f"could not read the evaluator's tables: {dump.error}")
    rows = json.loads(payload[len(ROWS_MARKER) :])

    violations = collect(manifest, results, rows)
    new, fixed = compare(violations, baseline)
    markdown = render_markdown(violations, new, fixed, baseline is not None)
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": target,
        "severity_default": os.environ.get(SEVERITY_ENV, "error"),
        "violations": [asdict(v) for v in violations],
        "new": [v.key for v in new],
        "fixed": fixed,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    write_summary(markdown, markdown_path)
    print(render_text(violations, new, fixed) or "dbt-project-evaluator: no violations")
    schema = next(
        (n["schema"] for n in manifest["nodes"].values() if n.get("package_name") == PACKAGE),
        "?",
    )
    print(f"report: {json_path}; the evaluator's tables are in schema {schema}")
    failing = [v for v in new if v.severity == "error"]
    if failing:
        print(f"{len(failing)} new error-level violation(s): failing")
        return 1
    return 0
