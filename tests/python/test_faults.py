"""Each named fault of the generator is caught by the test the severity policy names.

For every fault: regenerate the session's data set with the fault, rebuild (full refresh) a
copy of the clean warehouse, and check that exactly the expected test fires, with the
severity docs/test-severity.md gives it, that the printed line names the model or source, the
column and the rule, and that no mart was rebuilt from the bad data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from mediapulse import artifacts, build, generate
from mediapulse.faults import FAULTS
from mediapulse.project import Project
from mediapulse.slim_ci import node_name

from .conftest import REPO, clone_built, manifest_models, relation_of
from .policy import effective_severity, layer_of, load_policy, name_of_test, rule_for

pytestmark = pytest.mark.dbt


@dataclass(frozen=True)
class Caught:
    rule: str  # test_metadata name, namespace-qualified
    where: str  # "source <source>.<table>" or the model's name
    column: str
    status: str  # what dbt reports for the injected amount: error, fail or warn


CAUGHT_BY: dict[str, Caught | tuple[Caught, ...]] = {
    # every source key is not_null and unique: a missing key column breaks both, loudly
    "renamed_column": (
        Caught("not_null", "source accounts.users", "user_id", "error"),
        Caught("unique", "source accounts.users", "user_id", "error"),
    ),
    "null_keys": Caught("not_null", "source streaming.watch_events", "user_id", "fail"),
    "late_redelivery": Caught(
        "redelivered_within_window", "source streaming.watch_events", "event_id", "warn"
    ),
    "negative_revenue": Caught(
        "dbt_utils.accepted_range", "stg_ads__ad_impressions", "revenue_micros", "fail"
    ),
    # a warn-level signal whose error_if threshold the 500 injected rows exceed
    "future_timestamps": Caught(
        "dbt_utils.expression_is_true", "stg_streaming__watch_events", "event_at", "fail"
    ),
    # a loader's clock a year ahead, in both event tables that feed incremental models
    "future_loaded_at": (
        Caught("not_in_future", "source streaming.watch_events", "loaded_at", "fail"),
        Caught("not_in_future", "source ads.ad_impressions", "loaded_at", "fail"),
    ),
    "missing_day": Caught(
        "dbt_expectations.expect_row_values_to_have_data_for_every_n_datepart",
        "stg_streaming__watch_events",
        "event_at",
        "fail",
    ),
    "orphan_impression": Caught("relationships", "stg_ads__ad_impressions", "content_id", "fail"),
    "unknown_currency": Caught(
        "relationships", "stg_billing__subscriptions", "currency_code", "fail"
    ),
}


def test_every_fault_has_a_catching_test() -> None:
    assert set(CAUGHT_BY) == set(FAULTS)


def _mart_rows(project: Project) -> dict[str, set]:
    marts = {n: node for n, node in manifest_models(project).items() if node["fqn"][1] == "marts"}
    with duckdb.connect(str(project.duckdb_path("dev")), read_only=True) as con:
        return {n: set(con.execute(f"select * from {relation_of(node)}").fetchall())
                for n, node in marts.items()}  # fmt: skip


@pytest.fixture(scope="module")
def clean_marts(built: Project) -> dict[str, set]:
    return _mart_rows(built)


@pytest.mark.parametrize("fault", sorted(CAUGHT_BY))
def test_fault_is_caught_by_the_policy_test(
    fault: str,
    built: Project,
    clean_marts: dict[str, set],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caught = CAUGHT_BY[fault]
    expected_all = caught if isinstance(caught, tuple) else (caught,)
    project = clone_built(built, tmp_path / "project")
    with duckdb.connect(str(project.raw_path), read_only=True) as con:
        params, _ = generate.read_params(con, project.raw_path)
    generate.generate(project.raw_path, params, faults=[fault], overwrite=True)
    capsys.readouterr()
    code = build.main_job(project, target="dev", full_refresh=True)
    printed = capsys.readouterr().out

    results = artifacts.node_results(project.target_dir)
    fired = [
        r for r in results
        if r.resource_type in ("test", "unit_test") and r.status not in ("pass", "skipped")
    ]  # fmt: skip
    assert sorted((r.rule, r.model, r.column, r.status) for r in fired) == sorted(
        (e.rule, e.where, e.column, e.status) for e in expected_all
    ), "exactly the expected test fires"

    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    rules = load_policy(REPO / "docs" / "test-severity.md")
    for hit, expected in zip(
        sorted(fired, key=lambda r: (r.rule or "", r.model or "")),
        sorted(expected_all, key=lambda e: (e.rule, e.where)),
        strict=True,
    ):
        # the test implements the severity the policy gives its kind in its layer
        node = manifest["nodes"][hit.unique_id]
        rule = rule_for(rules, layer_of(node, manifest), name_of_test(node), hit.column)
        assert rule is not None, f"{hit.unique_id} is not covered by the policy"
        assert effective_severity(node["config"]) == rule.severity
        # the line the user reads names the rule, the model or source and the column
        line = next(x for x in printed.splitlines() if hit.name in x)
        assert expected.rule in line and expected.where in line and expected.column in line
    expected = expected_all[0]

    models = {node_name(r.unique_id): r for r in results if r.resource_type == "model"}
    marts_now = _mart_rows(project)
    # nothing bad lands in a mart: each holds exactly what the clean build put there
    for mart, rows in marts_now.items():
        assert rows == clean_marts[mart], f"{mart} differs from the clean build"
    if expected.status == "warn":
        assert code == 0, "a warning does not fail the build"
        assert all(models[m].status == "success" for m in marts_now)
    else:
        assert code == 1
        assert any(models[m].status == "skipped" for m in marts_now), (
            "the marts downstream of the failed test must be skipped, not rebuilt"
        )
