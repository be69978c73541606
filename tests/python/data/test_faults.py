"""Each named fault of the generator is caught by the test the severity policy names, and no
release publishes it.

For every fault: regenerate the session's data set with the fault, release production
(`mediapulse nightly`: a staged copy rebuilt by a full refresh with every test; a deploy of
unchanged code rebuilds nothing, and the refresh's own fault tests are in
release/test_refresh.py) from a copy of the clean production, and check that the expected test
fires, with the severity docs/test-severity.md gives it, that the line the user reads names the
model or source, the column and the rule, that any other test failing with it is on a model
built from the faulty rows, and that production holds exactly what the clean release put there.
Production is protected by the release publishing nothing, not by `dbt build` skipping models:
on `dev`, a failing foreign key does not stop every model downstream of its staging model.

A fault that changes the raw tables' shape (a renamed column) is stopped earlier, by the
schema check every job runs before dbt (mediapulse.monitoring.schema_changes): the nightly
exits with the one-line error naming the change, no model runs, and production is left as it was.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from mediapulse.cli import main as cli
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.data.faults import FAULTS
from mediapulse.dbt import artifacts
from mediapulse.engines.duckdb import production_file
from mediapulse.engines.targets import resolve
from mediapulse.release.execute import run_nightly

from ..conftest import REPO, clone_built, manifest_models, relation_of
from ..support.policy import effective_severity, layer_of, load_policy, name_of_test, rule_for

pytestmark = pytest.mark.dbt


@dataclass(frozen=True)
class Caught:
    rule: str  # test_metadata name, namespace-qualified
    where: str  # "source <source>.<table>" or the model's name
    column: str
    status: str  # what dbt reports for the injected amount: error, fail or warn


@dataclass(frozen=True)
class StoppedBeforeTheBuild:
    """Stopped by the schema check before dbt runs, with this error line (the CLI prints
    "mediapulse <job>: error: " before it)."""

    line: str


CAUGHT_BY: dict[str, Caught | tuple[Caught, ...] | StoppedBeforeTheBuild] = {
    # a critical source's column renamed: stopped before any model runs, the rename named (a
    # plain `dbt build` still fails on the key's source not_null and unique tests)
    "renamed_column": StoppedBeforeTheBuild(
        "source accounts.users: column user_id is gone and userId (bigint) is new: likely "
        "renamed user_id -> userId; rename it back in the loader, or update the source's "
        "columns and staging model",
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
    with duckdb.connect(str(production_file(project)), read_only=True) as con:
        return {n: set(con.execute(f"select * from {relation_of(node)}").fetchall())
                for n, node in marts.items()}  # fmt: skip


@pytest.fixture(scope="module")
def clean_marts(after_nightly: Project) -> dict[str, set]:
    return _mart_rows(after_nightly)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _attached(node: dict) -> str:
    """The model or source a test is defined on."""
    return node.get("attached_node") or node["depends_on"]["nodes"][0]


def _descendants(manifest: dict, roots: set[str]) -> set[str]:
    found, todo = set(), list(roots)
    while todo:
        for child in manifest["child_map"].get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.mark.parametrize("fault", sorted(CAUGHT_BY))
def test_fault_is_caught_by_the_policy_test(
    fault: str,
    after_nightly: Project,
    clean_marts: dict[str, set],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caught = CAUGHT_BY[fault]
    project = clone_built(after_nightly, tmp_path / "project")
    with duckdb.connect(str(project.raw_path), read_only=True) as con:
        params, _ = generate.read_params(con, project.raw_path)
    generate.generate(project.raw_path, params, faults=[fault], overwrite=True)
    production = production_file(project)
    before = _digest(production)
    state = project.root / "state"
    capsys.readouterr()
    if isinstance(caught, StoppedBeforeTheBuild):
        results = project.target_dir / "run_results.json"
        untouched = _digest(results), _digest(state / "release.json")
        where = ["--project-dir", str(project.root), "--warehouse-dir", str(project.warehouse_dir)]
        code = cli.main([*where, "nightly", "--artifacts", str(state)])
        printed = capsys.readouterr()
        assert code == 2, printed.out + printed.err
        # the user reads the change, in one line, and that nothing was built
        assert printed.err.strip().splitlines() == [f"mediapulse nightly: error: {caught.line}"]
        assert "stopping before any model runs" in printed.out
        assert (_digest(results), _digest(state / "release.json")) == untouched, "dbt ran"
        assert _digest(production) == before, "a stopped release leaves production untouched"
        return
    expected_all = caught if isinstance(caught, tuple) else (caught,)
    code = run_nightly(resolve(project, "prod"), state, None)
    printed = capsys.readouterr().out

    # the build's results: published with the state when the release passed (the docs step
    # after it writes its own run_results.json), still in target/ when the build failed
    results = artifacts.node_results(state if code == 0 else project.target_dir)
    fired = [
        r for r in results
        if r.resource_type in ("test", "unit_test") and r.status not in ("pass", "skipped")
    ]  # fmt: skip
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    rules = load_policy(REPO / "docs" / "test-severity.md")
    hits = []
    for expected in expected_all:
        matching = [
            r for r in fired
            if (r.rule, r.model, r.column, r.status)
            == (expected.rule, expected.where, expected.column, expected.status)
        ]  # fmt: skip
        assert len(matching) == 1, f"expected {expected} to fire once; fired: {fired}"
        (hit,) = matching
        hits.append(hit)
        # the test implements the severity the policy gives its kind in its layer
        node = manifest["nodes"][hit.unique_id]
        rule = rule_for(rules, layer_of(node, manifest), name_of_test(node), hit.column)
        assert rule is not None, f"{hit.unique_id} is not covered by the policy"
        assert effective_severity(node["config"]) == rule.severity
        # the line the user reads names the rule, the model or source and the column (a
        # release reports failures; a warning is the line `mediapulse build` prints)
        line = (
            next(x for x in printed.splitlines() if hit.name in x)
            if hit.failed else hit.describe()
        )  # fmt: skip
        assert expected.rule in line and expected.where in line and expected.column in line

    # any other test that fails is on a model built from the faulty rows
    gates = {_attached(manifest["nodes"][h.unique_id]) for h in hits}
    downstream = _descendants(manifest, gates)
    elsewhere = [
        r.describe() for r in fired
        if r not in hits and _attached(manifest["nodes"][r.unique_id]) not in downstream
    ]  # fmt: skip
    assert not elsewhere, f"failures not downstream of the fault's gate: {elsewhere}"

    if expected_all[0].status == "warn":
        assert code == 0, "a warning does not fail the release"
        # and the release it published holds exactly what the clean one did
        assert _mart_rows(project) == clean_marts
    else:
        assert code == 1
        assert "production left as it was" in printed
        assert _digest(production) == before, "a failed release leaves production untouched"
