"""The project's written rules hold: severity policy == YAML, everything documented, contracts,
the critical path to the exposures, source freshness, and dbt-project-evaluator clean."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from mediapulse.core.project import Project
from mediapulse.core.sources import is_raw_source
from mediapulse.dbt import artifacts
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history
from mediapulse.monitoring import views as monitoring

from ..conftest import REPO, clone_built, relation_of
from ..support.policy import (
    DEFAULT_THRESHOLD,
    effective_severity,
    layer_of,
    load_policy,
    name_of_test,
    rule_for,
)

pytestmark = pytest.mark.dbt

POLICY = REPO / "docs" / "test-severity.md"


@pytest.fixture(scope="module")
def manifest(built: Project) -> dict:
    return artifacts.load_json(built.target_dir / "manifest.json", "manifest")


def _own_tests(manifest: dict) -> list[dict]:
    tests = [
        n for n in manifest["nodes"].values()
        if n["resource_type"] == "test" and n["package_name"] == "mediapulse"
    ]  # fmt: skip
    units = [
        n for n in manifest.get("unit_tests", {}).values() if n["package_name"] == "mediapulse"
    ]
    return tests + units


def _column(node: dict) -> str | None:
    return node.get("column_name") or (node.get("test_metadata") or {}).get("kwargs", {}).get(
        "column_name"
    )


def test_every_test_has_the_severity_the_policy_gives(manifest: dict) -> None:
    rules = load_policy(POLICY)
    problems = []
    for node in _own_tests(manifest):
        layer, name = layer_of(node, manifest), name_of_test(node)
        rule = rule_for(rules, layer, name, _column(node))
        if rule is None:
            problems.append(f"{node['unique_id']}: no policy row for ({layer}, {name})")
            continue
        config = node.get("config", {})
        severity = effective_severity(config)
        if node["resource_type"] == "unit_test":
            severity = "error"  # a failing unit test always fails the build
        if severity != rule.severity:
            problems.append(
                f"{node['unique_id']}: severity {severity}, policy says {rule.severity}"
            )
        error_if = str(config.get("error_if", DEFAULT_THRESHOLD)).strip()
        if error_if != DEFAULT_THRESHOLD and str(config.get("severity")).lower() != "error":
            problems.append(f"{node['unique_id']}: error_if without severity error never fires")
        if rule.severity == "error" and error_if != DEFAULT_THRESHOLD:
            problems.append(f"{node['unique_id']}: an error-policy test keeps error_if != 0")
        wanted = re.findall(r"(warn_if|error_if)\s*(\S+\s*\d+)", rule.thresholds)
        for key, value in wanted:
            if str(config.get(key)).replace(" ", "") != value.replace(" ", ""):
                problems.append(
                    f"{node['unique_id']}: {key} {config.get(key)}, policy says {value}"
                )
    assert not problems, "\n".join(problems)


def test_every_policy_row_is_used(manifest: dict) -> None:
    """A policy row no test follows is a rule nobody applies (or a typo)."""
    used = set()
    for node in _own_tests(manifest):
        used.add((layer_of(node, manifest), name_of_test(node), _column(node)))
        used.add((layer_of(node, manifest), name_of_test(node), None))
    unused = [key for key in load_policy(POLICY) if key not in used]
    assert not unused, f"policy rows no test follows: {unused}"


def _refresh_section() -> str:
    text = POLICY.read_text()
    start = text.index("## Which job runs which test")
    return text[start : text.index("\n## ", start + 1)]


def test_the_refresh_leaves_to_the_nightly_exactly_what_the_policy_says(manifest: dict) -> None:
    """docs/test-severity.md's table of whole-history rules is var('whole_history_tests'), and
    every such rule used on a relation a refresh scopes is one the project really uses."""
    section = _refresh_section()
    documented = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE))
    assert documented == set(Project.discover(REPO).vars["whole_history_tests"])
    scoped = {
        uid for uid, node in {**manifest["nodes"], **manifest["sources"]}.items()
        if (node.get("config", {}).get("meta") or {}).get("new_rows_column")
    }  # fmt: skip
    # the relations the policy names as scoped are the ones dbt_project.yml configures
    named = {uid.split(".")[-1] if uid.startswith("model.") else ".".join(uid.split(".")[-2:])
             for uid in scoped}  # fmt: skip
    listed = section.split("**New rows only**", 1)[1].split("**In full**", 1)[0]
    assert named == set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)?)`", listed)) - {
        "meta.new_rows_column", "dbt_project.yml", "get_where_subquery"
    }  # fmt: skip
    on_scoped = {
        n["test_metadata"]["name"] for n in _own_tests(manifest)
        if n.get("test_metadata") and (n.get("attached_node") in scoped or
                                       set(n["depends_on"]["nodes"]) & scoped)
    }  # fmt: skip
    assert documented <= on_scoped, f"rules no scoped relation uses: {documented - on_scoped}"


def test_warn_level_tests_say_why_in_a_comment() -> None:
    """A warn-level test is a signal, not a gate, so it carries its threshold and a comment
    saying why it only warns (docs/test-severity.md)."""
    missing = []
    for path in sorted((REPO / "models").rglob("*.yml")) + sorted((REPO / "seeds").rglob("*.yml")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if re.search(r"severity:\s*warn", line):
                block = lines[max(0, number - 12) : number + 4]
                if not any(x.strip().startswith("#") for x in block):
                    missing.append(f"{path.relative_to(REPO)}:{number + 1}")
    assert not missing, f"warn tests without a comment saying why: {missing}"


def _bad_description(text: str | None) -> bool:
    return not text or not text.strip() or "todo" in text.lower() or "tbd" in text.lower()


def test_everything_is_documented(built: Project, manifest: dict, tmp_path: Path) -> None:
    problems = []
    own = [
        n for n in manifest["nodes"].values()
        if n["package_name"] == "mediapulse" and n["resource_type"] in ("model", "seed", "snapshot")
    ]  # fmt: skip
    for node in own:
        if _bad_description(node.get("description")):
            problems.append(f"{node['unique_id']} has no description")
        for column in node["columns"].values():
            if _bad_description(column.get("description")):
                problems.append(f"{node['unique_id']}.{column['name']} has no description")
    for source in manifest["sources"].values():
        if _bad_description(source.get("description")):
            problems.append(f"{source['unique_id']} has no description")
        if _bad_description(source.get("source_description")):
            problems.append(f"source {source['source_name']} has no description")
        for column in source["columns"].values():
            if _bad_description(column.get("description")):
                problems.append(f"{source['unique_id']}.{column['name']} has no description")
    for exposure in manifest["exposures"].values():
        if _bad_description(exposure.get("description")) or not exposure.get("owner", {}).get(
            "email"
        ):
            problems.append(f"{exposure['unique_id']} lacks a description or an owner e-mail")
    # and every column that exists in the warehouse is one of the documented ones (the
    # monitoring views too, built as `mediapulse report` builds them, in the history's file)
    project = clone_built(built, tmp_path / "project")
    assert monitoring.build(resolve(project, "dev"))[0]
    with duckdb.connect(str(duckdb_file(project, "dev")), read_only=True) as con:
        con.execute(
            f"attach '{history.duckdb_path(resolve(project, 'dev'))}' as monitoring (read_only)"
        )
        for node in own:
            if node["resource_type"] == "model" and node["config"]["materialized"] == "ephemeral":
                continue
            database, schema, table = relation_of(node).split(".")
            actual = {
                r[0]
                for r in con.execute(
                    "select column_name from information_schema.columns "
                    "where table_catalog = ? and table_schema = ? and table_name = ?",
                    [database, schema, table],
                ).fetchall()
            }
            assert actual, f"{relation_of(node)} not found in the warehouse"
            undocumented = actual - set(node["columns"])
            if undocumented:
                problems.append(f"{node['unique_id']}: undocumented columns {sorted(undocumented)}")
    assert not problems, "\n".join(problems)


def test_marts_have_enforced_contracts_groups_and_owners(manifest: dict) -> None:
    groups = manifest.get("groups", {})
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or node["package_name"] != "mediapulse":
            continue
        if node["fqn"][1] != "marts":
            continue
        name = node["unique_id"]
        assert node["config"]["contract"]["enforced"], name
        assert node["columns"], f"{name} declares no columns"
        assert all(c.get("data_type") for c in node["columns"].values()), name
        assert node["access"] == "public", name
        group = node.get("group") or node["config"].get("group")
        assert group, f"{name} has no group"
        owner = groups[f"group.mediapulse.{group}"]["owner"]
        assert owner.get("email") or owner.get("name"), f"group {group} has no owner"
        constraints = [c["type"] for col in node["columns"].values() for c in col["constraints"]]
        constraints += [c["type"] for c in node.get("constraints", [])]
        assert "primary_key" in constraints and "not_null" in constraints, name


def test_a_planned_breaking_change_is_versioned(manifest: dict) -> None:
    versioned = [
        n for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n.get("version") is not None
    ]  # fmt: skip
    assert versioned, "no versioned model"
    by_model: dict[str, list[dict]] = {}
    for node in versioned:
        by_model.setdefault(node["name"], []).append(node)
    for name, nodes in by_model.items():
        assert len(nodes) >= 2, f"{name} has a single version"
        assert any(n.get("deprecation_date") for n in nodes), f"{name}: no version is deprecated"


def test_critical_tag_marks_exactly_the_path_to_the_exposures(manifest: dict) -> None:
    parents = manifest["parent_map"]
    upstream: set[str] = set()
    todo = [p for e in manifest["exposures"] for p in parents.get(e, [])]
    while todo:
        node = todo.pop()
        if node not in upstream:
            upstream.add(node)
            todo.extend(parents.get(node, []))
    models = {
        uid for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and n["package_name"] == "mediapulse"
    }  # fmt: skip
    critical = {uid for uid in models if "critical" in manifest["nodes"][uid]["tags"]}
    assert critical == models & upstream


def test_the_tricky_logic_has_unit_tests(built: Project, manifest: dict) -> None:
    tested = {n["model"] for n in manifest.get("unit_tests", {}).values()}
    for model in (
        "int_watch_events_sessionized",
        "int_subscription_revenue_allocated",
        "int_subscriptions_converted_to_usd",
    ):
        assert model in tested, f"{model} has no unit test"
    incremental = [
        n for n in manifest.get("unit_tests", {}).values()
        if (n.get("overrides") or {}).get("macros", {}).get("is_incremental")
    ]  # fmt: skip
    assert incremental, "no unit test exercises an incremental run (late events)"
    results = [
        r for r in artifacts.node_results(built.target_dir) if r.resource_type == "unit_test"
    ]
    # every unit test but the monitoring layer's, run with its build (monitoring/test_views.py)
    monitoring_layer = "models/monitoring/"
    built_with_project = [u for u in manifest["unit_tests"].values()
                          if not u["original_file_path"].startswith(monitoring_layer)]  # fmt: skip
    assert len(results) == len(built_with_project)
    assert all(r.status == "pass" for r in results)


def test_every_source_has_freshness_and_it_passes(built: Project, tmp_path: Path) -> None:
    manifest = artifacts.load_json(built.target_dir / "manifest.json", "manifest")
    checked = []
    for source in manifest["sources"].values():
        freshness = source.get("freshness") or {}
        if not is_raw_source(source):
            # the run history: written by the jobs themselves, its freshness on `runs` only
            if source["name"] == "runs":
                assert source.get("loaded_at_field") == "recorded_at"
                assert (freshness.get("error_after") or {}).get("count")
                checked.append(source)
            continue
        # the newest load not in the future: a row stamped ahead must not look fresh
        query = source.get("loaded_at_query") or ""
        assert "newest_load_not_in_future" in query, source["unique_id"]
        assert (freshness.get("error_after") or {}).get("count"), source["unique_id"]
        checked.append(source)
    project = clone_built(built, tmp_path / "project")
    result = run_dbt(resolve(project, "dev"), ["source", "freshness", "--select", "source:*"])
    assert result.success, result.error
    sources = artifacts.load_json(project.target_dir / "sources.json", "sources")
    assert {r["status"] for r in sources["results"]} == {"pass"}
    assert len(sources["results"]) == len(checked)


def test_project_evaluator_finds_nothing(built: Project, tmp_path: Path) -> None:
    project = clone_built(built, tmp_path / "project")
    # the rules' severity is dbt_project.yml's default: error
    result = run_dbt(resolve(project, "dev"), ["build", "--selector", "project_evaluator"])
    results = artifacts.node_results(project.target_dir)
    failing = [r.describe() for r in results if r.status not in ("success", "pass")]
    assert result.success and not failing, failing
    assert sum(r.resource_type == "test" for r in results) >= 20
