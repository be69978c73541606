"""The workflows in .github/workflows run as GitHub runs them, one scenario per test.

Every job runs on a fresh runner (tests/python/support/gha.py): a new clone of the scenario's
repository at the job's commit, plus only the artifacts its download steps fetch from the
artifact store, which holds what the latest successful run on main published. The scenarios
follow the order GitHub would run them in: a pull request before anything was ever published,
the first nightly on an empty store, pull requests against it, validation, a deploy of the
merged change, the next nightly, an expired warehouse artifact, and a rollback. Production's
jobs run in the `production` environment, which holds production's secrets and admits main
only (a dispatch from another branch never starts, or stops at its guard); the loader's raw
data travels sealed between them, and pull requests read a masked copy: at the end, no file
any job uploaded and no PR comment holds a generated e-mail address or name.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

from mediapulse.ci.summarize import MARKER
from mediapulse.core.errors import MediaPulseError
from mediapulse.data import generate
from mediapulse.dbt import artifacts
from mediapulse.release.duckdb import read_stamp, read_state
from mediapulse.security import sealing

from ..conftest import copy_project
from ..support import gha

pytestmark = pytest.mark.dbt

STATE = "production-state"
WAREHOUSE = "production-warehouse"
RAW = "production-raw"  # the loader's raw data, sealed
CI_RAW = "ci-raw"  # the raw data with every personal column masked, for pull requests
HISTORY = "run-history"
REPORT = "morning-report"
DOCS_SITE = "docs-site"  # the project's documentation site (make docs), beside the report
# the pull request event of every PR scenario: #1, from a branch of this repository
PULL_REQUEST = {
    "pull_request": {"number": 1, "head": {"repo": {"full_name": "mediapulse/mediapulse"}}}
}
CONTENT_MODEL = "models/staging/catalog/stg_catalog__content.sql"
REVENUE_TEST = "tests/marts/finance/assert_subscription_revenue_fully_allocated.sql"
# Production's secrets, as secrets of its environment (throwaway values); main only.
RAW_KEY = "5eed" * 16
PRODUCTION = gha.Environment(
    secrets={"MEDIAPULSE_PII_HASH_KEY": "rehearsal-key", sealing.KEY_ENV: RAW_KEY},
    branches=("main",),
)


@dataclass
class Scenario:
    repository: Path  # the GitHub repository: main, and a branch per pull request
    work: Path
    comments: list[str] = field(default_factory=list)  # every PR comment posted

    def workflow(self, name: str) -> Path:
        return self.repository / ".github" / "workflows" / name

    def runner(self, store: gha.Store) -> gha.Runner:
        return gha.Runner(
            self.repository, store, self.work, environments={"production": PRODUCTION}
        )

    def branch(self, name: str, edit: Callable[[Path], None], base: str = "main") -> str:
        """A pull request's head: `edit` applied to `base` and committed; returns the commit."""
        gha.git(self.repository, "checkout", "--quiet", "-B", name, base)
        edit(self.repository)
        gha.git(self.repository, "commit", "--quiet", "-am", f"pull request {name}")
        commit = gha.git(self.repository, "rev-parse", "HEAD")
        gha.git(self.repository, "checkout", "--quiet", "main")
        return commit

    def merge(self, commit: str) -> str:
        gha.git(self.repository, "merge", "--quiet", "--ff-only", commit)
        return gha.git(self.repository, "rev-parse", "HEAD")

    def pull_request(
        self, store: gha.Store, commit: str, skip: tuple[str, ...] = ()
    ) -> tuple[gha.JobResult, gha.JobResult]:
        """The PR workflow's dbt checks, then the comment from their report (its code job,
        the lint and unit tests, is `code_checks`: it reads and writes nothing of theirs)."""
        payload = PULL_REQUEST
        runner = self.runner(store)
        checks = runner.run(self.workflow("pr-slim-ci.yml"), "checks", commit=commit,
                            event="pull_request", event_payload=payload, skip=skip)  # fmt: skip
        comment = runner.run(self.workflow("pr-slim-ci.yml"), "comment", commit=commit,
                             event="pull_request", event_payload=payload,
                             run_artifacts=checks.uploaded)  # fmt: skip
        if comment.comment is not None:
            self.comments.append(comment.comment)
        return checks, comment

    def code_checks(
        self, store: gha.Store, commit: str, skip: tuple[str, ...] = ()
    ) -> gha.JobResult:
        """The PR workflow's code job, on a runner of its own: the lint and the unit tests."""
        return self.runner(store).run(self.workflow("pr-slim-ci.yml"), "code", commit=commit,
                                      event="pull_request", event_payload=PULL_REQUEST,
                                      skip=skip)  # fmt: skip

    def on_main(self, store: gha.Store, workflow: str, job: str, **kwargs) -> gha.JobResult:
        runner = self.runner(store)
        runner.pull_requests = kwargs.pop("pull_requests", {})  # what GitHub has of each PR
        return runner.run(self.workflow(workflow), job, commit="main",
                                      event=kwargs.pop("event", "schedule"), on_main=True,
                                      **kwargs)  # fmt: skip


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _ok(job: gha.JobResult) -> None:
    assert job.success, job.log()


@contextmanager
def _loading(store: gha.Store, work: Path) -> Iterator[Path]:
    """The loader's turn: production's raw data, unsealed for it to write in ``work``, then
    sealed into the store again (it travels only sealed), where the next job's download finds
    it (the latest finished run's)."""
    sealed = store.completed().path(RAW) / "raw.duckdb.sealed"
    plain = work / "loader" / "raw.duckdb"
    sealing.unseal(sealed, plain, bytes.fromhex(RAW_KEY), "the rehearsal's raw data")
    yield plain
    sealing.seal(plain, sealed, bytes.fromhex(RAW_KEY))
    shutil.copy2(sealed, store.path(RAW) / "raw.duckdb.sealed")


def _upper_titles(edit_root: Path) -> None:
    path = edit_root / CONTENT_MODEL
    text = path.read_text()
    assert "        title,\n" in text
    path.write_text(text.replace("        title,\n", "        upper(title) as title,\n", 1))


def _unreviewed(edit_root: Path) -> None:
    """A change nobody reviewed (what it does does not matter: it must never run)."""
    model = edit_root / "models/marts/core/dim_content.sql"
    model.write_text(model.read_text() + "-- unreviewed\n")


def _relation(state: Path, model: str) -> str:
    nodes = artifacts.load_json(state / "manifest.json", "manifest")["nodes"]
    node = next(
        n for n in nodes.values()
        if n["resource_type"] in ("model", "snapshot") and n["name"] == model
        and n["package_name"] == "mediapulse"
    )  # fmt: skip
    return artifacts.unquoted_relation(node).split(".", 1)[1]


def _count(database: Path, sql: str) -> int:
    with duckdb.connect(str(database), read_only=True) as con:
        return int(con.execute(sql).fetchone()[0])


def _mixed_case_titles(store: gha.Store) -> int:
    """Titles of production's dim_content not in upper case (the relation the state names)."""
    relation = _relation(store.path(STATE), "dim_content")
    prod = store.path(WAREHOUSE) / "prod.duckdb"
    return _count(prod, f"select count(*) from {relation} where title <> upper(title)")


def init_repository(root: Path) -> Path:
    """The scenario's GitHub repository: this project committed on `main`."""
    repository = root / "repository"
    copy_project(repository)
    gha.git(repository, "init", "--quiet", "--initial-branch=main")
    gha.git(repository, "add", "-A")
    gha.git(repository, "commit", "--quiet", "-m", "main")
    return repository


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("github")
    return Scenario(init_repository(root), root / "runners")


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> gha.Store:
    root = tmp_path_factory.mktemp("store-empty") / "store"
    root.mkdir()
    return gha.Store(root)


@pytest.fixture(scope="module")
def first_nightly(
    scenario: Scenario, empty_store: gha.Store, tmp_path_factory: pytest.TempPathFactory
) -> tuple[gha.JobResult, gha.Store]:
    store = empty_store.copy(tmp_path_factory.mktemp("store-nightly") / "store")
    return scenario.on_main(store, "nightly.yml", "nightly"), store


@pytest.fixture(scope="module")
def published(first_nightly: tuple[gha.JobResult, gha.Store]) -> gha.Store:
    """The store after the first nightly; a test that needs it fails if that nightly did."""
    job, store = first_nightly
    _ok(job)
    return store


@pytest.fixture(scope="module")
def merged_change(scenario: Scenario) -> str:
    """The pull request most scenarios use: titles in upper case, in a staging model."""
    return scenario.branch("upper-titles", _upper_titles)


@pytest.fixture(scope="module")
def change_checked(
    scenario: Scenario, published: gha.Store, merged_change: str
) -> tuple[gha.JobResult, gha.JobResult, dict[str, str], gha.JobResult]:
    """Pull request #1 (the merged change) through the PR workflow: its dbt checks, the
    comment, the store's digest before them, and its code job (lint and unit tests)."""
    before = _digest(published.root)
    checks, comment = scenario.pull_request(published, merged_change)
    # Unit tests: the same `pytest -m "not dbt"` that make test runs on this very tree
    code = scenario.code_checks(published, merged_change, skip=("Unit tests",))
    return checks, comment, before, code


@pytest.fixture(scope="module")
def deployed(
    scenario: Scenario,
    published: gha.Store,
    merged_change: str,
    change_checked: tuple[gha.JobResult, gha.JobResult, dict[str, str], gha.JobResult],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[gha.JobResult, gha.Store]:
    """Pull request #1 merged (GitHub's merge message) and deployed; GitHub gives the
    deploy the artifacts of the PR's checks run."""
    store = published.copy(tmp_path_factory.mktemp("store-deploy") / "store")
    scenario.merge(merged_change)
    merge = {"head_commit": {"message": "Merge pull request #1 from mediapulse/upper-titles\n\n"
                                        "Titles in upper case"}}  # fmt: skip
    job = scenario.on_main(store, "deploy.yml", "deploy", event="push", event_payload=merge,
                           pull_requests={"1": change_checked[0].uploaded})  # fmt: skip
    return job, store


def test_a_pull_request_before_any_nightly_builds_everything_with_a_notice(
    scenario: Scenario, empty_store: gha.Store, merged_change: str
) -> None:
    before = _digest(empty_store.root)
    checks, comment = scenario.pull_request(empty_store, merged_change)
    _ok(checks)
    slim = checks.step("Slim CI")
    assert "no production state" in slim.stdout and "full build" in slim.stdout
    assert "no baseline" in checks.step("Project evaluator against main").stdout
    _ok(comment)
    assert comment.comment is not None and comment.comment.startswith(MARKER)
    assert "No production state: full build of the project." in comment.comment
    assert _digest(empty_store.root) == before, "a pull request publishes nothing"


def test_the_first_nightly_on_an_empty_store_publishes_production(
    first_nightly: tuple[gha.JobResult, gha.Store],
) -> None:
    job, store = first_nightly
    _ok(job)
    assert "guard: nightly from refs/heads/main" in job.step("Production guard").stdout
    assert "no production yet" in job.step("Full refresh, freshness, tests, docs").stdout
    state = store.path(STATE)
    for name in ("manifest.json", "run_results.json", "sources.json", "catalog.json",
                 "evaluator.json", "release.json"):  # fmt: skip
        assert (state / name).is_file(), f"{name} not published: {job.log()}"
    report = artifacts.load_json(state / "evaluator.json", "evaluator report")
    assert report["violations"] == []
    # production; the raw data sealed, and masked for pull requests (it was in
    # production-warehouse, in clear: issue 27); the run history that outlives the runner on its
    # own, kept for every finished run (a failed one's record matters most)
    assert {p.name for p in store.path(WAREHOUSE).iterdir()} == {"prod.duckdb"}
    assert [p.name for p in store.path(RAW).iterdir()] == ["raw.duckdb.sealed"]
    assert [p.name for p in store.path(CI_RAW).iterdir()] == ["raw.duckdb"]
    assert [p.name for p in store.path(HISTORY).iterdir()] == ["monitoring_prod.duckdb"]
    assert store.completed().has(HISTORY)
    # the morning report and the docs site beside it
    report = store.path(REPORT)
    assert {p.name for p in report.iterdir()} == {"index.html", "docs.html"}
    assert "Morning report: `prod`" in (job.workspace / "ci-output" / "report.md").read_text()
    # and the project's documentation site, built strictly, its CLI reference from the CLI
    site = store.path(DOCS_SITE)
    assert (site / "index.html").is_file() and (site / "reference" / "cli" / "index.html").is_file()
    assert _mixed_case_titles(store) > 0


def test_a_pull_request_is_built_against_production(
    published: gha.Store,
    change_checked: tuple[gha.JobResult, gha.JobResult, dict[str, str], gha.JobResult],
) -> None:
    checks, comment, before, code = change_checked
    _ok(checks)
    # the code job linted the change on a runner with no secret and nothing downloaded
    _ok(code)
    assert code.step("Lint").outcome == "success" and not code.secrets
    assert not (code.workspace / "ci-artifacts").exists()
    # the raw data it built from is the masked copy, and it held no production secret
    raw = checks.workspace / "warehouse" / "raw.duckdb"
    domains = "select distinct split_part(email, '@', 2) from accounts.users"
    with duckdb.connect(str(raw), read_only=True) as con:
        assert con.execute(domains).fetchall() == [("example.invalid",)]
    assert checks.environment is None and not checks.secrets & set(PRODUCTION.secrets)
    slim = (checks.workspace / "ci-output" / "slim-ci.md").read_text()
    assert "| modified | 1 | stg_catalog__content |" in slim
    assert "Slim CI results: passed" in slim
    # the fresh runner started dbt from the parse the nightly published with the state
    assert (published.path("production-state") / "partial_parse.ci.msgpack").is_file()
    assert "the project parsed once (" in slim and "partially, from the saved parse" in slim, slim
    # the evaluator starts from slim CI's parse too (its severity is dbt_project.yml's default,
    # not a variable that would change the parse), and the codegen check parses once, in full
    evaluator = checks.step("Project evaluator against main").stdout
    assert "parsed once (" in evaluator and "partially, from the saved parse" in evaluator, (
        evaluator
    )
    codegen = checks.step("Codegen check").stdout
    assert "2 invocations in one process, the project parsed once" in codegen, codegen
    ci = checks.workspace / "warehouse" / "ci.duckdb"
    relation = _relation(checks.workspace / "target", "dim_content")
    assert _count(ci, f"select count(*) from {relation} where title <> upper(title)") == 0
    # what the change does to the data: every mixed-case title of production, and who sees it
    diff = (checks.workspace / "ci-output" / "data-diff.md").read_text()
    mixed = _mixed_case_titles(published)
    assert mixed > 0 and diff.count(f"- changed columns: title {mixed} (") == 2, diff
    assert "- breaking: stg_catalog__content" in diff
    assert "- exposures whose data changes: content_performance" in diff
    # and as JSON, an artifact the deploy of the merged change keeps with its release
    kept = json.loads((checks.uploaded["data-diff"] / "data-diff.json").read_text())
    assert "model.mediapulse.stg_catalog__content" in {d["unique_id"] for d in kept}
    _ok(comment)
    assert comment.comment is not None and comment.comment.startswith(MARKER)
    for section in ("## Slim CI plan", "## Data diff against production", "dbt-project-evaluator",
                    "Codegen"):  # fmt: skip
        assert section in comment.comment
    assert _digest(published.root) == before, "a pull request never touches production"


def test_a_pull_request_changing_only_a_test_runs_it_and_fails(
    scenario: Scenario, published: gha.Store
) -> None:
    def break_the_test(root: Path) -> None:
        (root / REVENUE_TEST).write_text(
            "select 1 as broken from {{ ref('fct_subscription_revenue') }} limit 1\n"
        )

    commit = scenario.branch("break-a-test", break_the_test)
    checks, comment = scenario.pull_request(published, commit)
    assert not checks.success
    assert checks.step("Slim CI").outcome == "failure", checks.log()
    # the reports after it still run, and the comment says which test failed on what
    assert checks.step("Codegen check").outcome == "success", checks.log()
    _ok(comment)
    assert comment.comment is not None
    failure = next(
        line for line in comment.comment.splitlines()
        if "assert_subscription_revenue_fully_allocated" in line and "FAIL" in line
    )  # fmt: skip
    assert "fct_subscription_revenue" in failure
    assert "| modified tests | 1 | assert_subscription_revenue_fully_allocated |" in comment.comment


def test_a_pull_request_breaking_a_contract_fails_naming_the_column(
    scenario: Scenario, published: gha.Store
) -> None:
    def drop_is_original(root: Path) -> None:
        mart = root / "models/marts/core/dim_content.sql"
        mart.write_text("".join(
            line for line in mart.read_text().splitlines(keepends=True)
            if ".is_original," not in line
        ))  # fmt: skip
        yml = root / "models/marts/core/_core__models.yml"
        lines = yml.read_text().splitlines(keepends=True)
        model = next(i for i, x in enumerate(lines) if x.strip() == "- name: dim_content")
        start = next(
            i for i, x in enumerate(lines) if x.strip() == "- name: is_original" and i > model
        )
        indent = len(lines[start]) - len(lines[start].lstrip())
        end = start + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
        ):
            end += 1
        yml.write_text("".join(lines[:start] + lines[end:]))

    commit = scenario.branch("drop-a-contract-column", drop_is_original)
    checks, comment = scenario.pull_request(published, commit)
    slim = checks.step("Slim CI")
    assert slim.outcome == "failure"
    assert "breaking change to the contract of model dim_content" in slim.stderr
    assert comment.comment is not None and "is_original" in comment.comment


def test_validation_builds_and_tests_the_critical_path(
    scenario: Scenario, published: gha.Store, merged_change: str
) -> None:
    job = scenario.runner(published).run(
        scenario.workflow("pr-validation.yml"), "validate", commit=merged_change,
        event="merge_group",
    )  # fmt: skip
    _ok(job)
    manifest = artifacts.load_json(job.workspace / "target" / "manifest.json", "manifest")
    results = artifacts.node_results(job.workspace / "target")
    built = {r.unique_id for r in results if r.resource_type == "model"}
    critical = {
        uid for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and "critical" in n["tags"]
        and n["config"]["materialized"] != "ephemeral"
    }  # fmt: skip
    descendants, todo = set(), list(critical)
    while todo:
        for child in manifest["child_map"].get(todo.pop(), []):
            if child.startswith("model.") and child not in descendants:
                descendants.add(child)
                todo.append(child)
    assert critical and built == critical | descendants
    assert "Slim CI results: passed" in (job.workspace / "ci-output" / "validate.md").read_text()


def test_a_deploy_of_the_merged_change_swaps_production_and_keeps_the_previous(
    deployed: tuple[gha.JobResult, gha.Store],
) -> None:
    job, store = deployed
    _ok(job)
    assert _mixed_case_titles(store) == 0, "production runs the merged code"
    # a fresh runner, yet dbt parsed only what the merge changed: from the parse the last
    # release published with its state
    deploy = job.step("Build, test and swap in production").stdout
    assert "the project parsed once (" in deploy, deploy
    assert "partially, from the saved parse" in deploy, deploy
    state = store.path(STATE)
    raw_code = artifacts.load_json(state / "manifest.json", "manifest")["nodes"][
        "model.mediapulse.stg_catalog__content"
    ]["raw_code"]
    assert "upper(title) as title" in raw_code, "the next pull request compares with main"
    kept = sorted((store.path(WAREHOUSE) / "releases").glob("*.duckdb"))
    assert len(kept) == 1, "the replaced release is kept beside production, for a rollback"
    previous = json.loads(zlib.decompress(dict(read_state(kept[0]))["manifest.json"]))
    assert (
        "upper(title)" not in previous["nodes"]["model.mediapulse.stg_catalog__content"]["raw_code"]
    ), "the state of the replaced release is kept with it, for a rollback"


def test_the_deploy_keeps_the_merged_pull_requests_data_diff_with_its_release(
    deployed: tuple[gha.JobResult, gha.Store],
) -> None:
    """The PR is found in the merge message, its checks' `data-diff` artifact downloaded the
    way GitHub gives it to the job, and kept with the release in the published run history
    (what the alerts read to call an anomaly expected)."""
    job, store = deployed
    _ok(job)
    assert job.step("Find the merged pull request").outputs == {"pull_request": "1"}
    assert job.step("Download the merged pull request's data diff").outcome == "success"
    kept = job.step("Keep the data diff with the release").stdout
    assert re.search(r"release \S+ \(deploy, PR #1\): data diff of \d+ models kept", kept), kept
    release = json.loads((store.path(STATE) / "release.json").read_text())["release_id"]
    history = store.path(HISTORY) / "monitoring_prod.duckdb"
    with duckdb.connect(str(history), read_only=True) as con:
        rows = con.execute(
            "select release_id, pull_request, diff_known from monitoring.release_changes "
            "where unique_id = 'model.mediapulse.stg_catalog__content'"
        ).fetchall()
    assert rows == [(release, "1", True)], rows


def test_a_deploy_whose_test_fails_publishes_nothing(
    scenario: Scenario, published: gha.Store, tmp_path: Path
) -> None:
    def add_failing_test(root: Path) -> None:
        test = root / "tests" / "marts" / "assert_deploy_gate_rehearsal.sql"
        test.write_text(
            "-- a rule no data satisfies: a failing deploy must change nothing\n"
            "select content_id from {{ ref('dim_content') }}\n"
        )
        gha.git(root, "add", str(test))

    store = published.copy(tmp_path / "store")
    before = _digest(store.root)
    commit = scenario.branch("failing-deploy", add_failing_test)
    job = scenario.runner(store).run(
        scenario.workflow("deploy.yml"), "deploy", commit=commit, event="push", on_main=True
    )
    step = job.step("Build, test and swap in production")
    assert step.outcome == "failure"
    assert "production left as it was" in step.stdout
    assert "assert_deploy_gate_rehearsal" in (job.workspace / "ci-output" / "deploy.md").read_text()
    assert job.step("Alert on failure").outcome == "success", job.log()
    # nothing of a failed deploy is published but its record in the run history, kept for
    # the next job (which downloads the latest finished run's)
    assert _published(_digest(store.root)) == _published(before)
    history = store.completed().path(HISTORY) / "monitoring_prod.duckdb"
    runs = "select job, status from monitoring.runs order by started_at"
    with duckdb.connect(str(history), read_only=True) as con:
        assert con.execute(runs).fetchall()[-1] == ("deploy", "failed")


def test_the_hourly_refresh_adds_the_loaders_new_rows_then_rests(
    scenario: Scenario, deployed: tuple[gha.JobResult, gha.Store], tmp_path: Path
) -> None:
    _ok(deployed[0])
    store = deployed[1].copy(tmp_path / "store")
    live = artifacts.load_json(store.path(STATE) / "release.json", "release")["release_id"]
    sessions = _relation(store.path(STATE), "fct_watch_sessions")
    prod = store.path(WAREHOUSE) / "prod.duckdb"
    before = _count(prod, f"select count(*) from {sessions}")
    with _loading(store, tmp_path) as raw:
        generate.append_day(raw)  # the loader's next day
    job = scenario.on_main(store, "refresh.yml", "refresh")
    _ok(job)
    refresh = job.step("Refresh with the new raw rows").stdout
    assert "partially, from the saved parse" in refresh, refresh  # the deploy's, published
    release = artifacts.load_json(store.path(STATE) / "release.json", "release")
    assert release["job"] == "refresh" and release["release_id"] != live
    assert _count(prod, f"select count(*) from {sessions}") > before, "the new day is live"
    summary = (job.workspace / "ci-output" / "refresh.md").read_text()
    assert "passed, release" in summary and "streaming.watch_events +" in summary
    assert _mixed_case_titles(store) == 0, "the refresh ran the deployed code"

    # the next hour: nothing new, nothing built, nothing published changes
    unchanged = _digest(store.root)
    again = scenario.on_main(store, "refresh.yml", "refresh")
    _ok(again)
    assert "No new raw rows since release" in again.step("Refresh with the new raw rows").stdout
    # only the run history changes (it records the hour's run as skipped), and the morning
    # report that shows it; and the masked copy of the raw data, masked again with a new
    # secret salt (the sealed raw data is published as it came: it did not change)
    after = _digest(store.root)
    for stored in (store, store.completed()):
        history = str(stored.path(HISTORY).relative_to(store.root) / "monitoring_prod.duckdb")
        assert after.pop(history) != unchanged.pop(history)
        masked = str(stored.path(CI_RAW).relative_to(store.root) / "raw.duckdb")
        assert after.pop(masked) and unchanged.pop(masked)
        for page in ("index.html", "docs.html"):
            report = str(stored.path(REPORT).relative_to(store.root) / page)
            assert after.pop(report) and unchanged.pop(report)
    assert after == unchanged


def test_the_next_nightly_keeps_snapshot_history(
    scenario: Scenario, deployed: tuple[gha.JobResult, gha.Store], tmp_path: Path
) -> None:
    _ok(deployed[0])
    store = deployed[1].copy(tmp_path / "store")
    snapshot = _relation(store.path(STATE), "content_snapshot").replace(".content_snapshot", "")
    versions = "select content_id, dbt_valid_from from {}.content_snapshot"
    with duckdb.connect(str(store.path(WAREHOUSE) / "prod.duckdb"), read_only=True) as con:
        before = set(con.execute(versions.format(snapshot)).fetchall())
    # the catalogue renames a title, and the loader brings the new row (raw data is its own)
    with _loading(store, tmp_path) as raw, duckdb.connect(str(raw)) as con:
        con.execute(
            "update catalog.content set title = title || ' (Director''s Cut)', "
            "updated_at = (select max(loaded_at) from catalog.content), "
            "loaded_at = (select max(loaded_at) from catalog.content) "
            "where content_id = (select min(content_id) from catalog.content)"
        )
    job = scenario.on_main(store, "nightly.yml", "nightly")
    _ok(job)
    with duckdb.connect(str(store.path(WAREHOUSE) / "prod.duckdb"), read_only=True) as con:
        after = set(con.execute(versions.format(snapshot)).fetchall())
        closed = con.execute(
            f"select count(*) from {snapshot}.content_snapshot where dbt_valid_to is not null"
        ).fetchone()[0]
    assert before <= after, "every version recorded before survives the rebuild"
    assert closed > 0, "renamed titles closed their previous version"


def test_a_nightly_whose_evaluator_fails_after_its_swap_still_publishes_what_it_released(
    scenario: Scenario, deployed: tuple[gha.JobResult, gha.Store], tmp_path: Path
) -> None:
    """A step after the release fails (here the evaluator, pointed at a target that does not
    exist): the release is live, so its warehouse and state are published all the same, and
    the next job works from them (before, every upload was skipped and the next job took the
    release before it, silently)."""
    _ok(deployed[0])
    store = deployed[1].copy(tmp_path / "store")
    before = read_stamp(store.path(WAREHOUSE) / "prod.duckdb")
    runner = gha.Runner(scenario.repository, store, scenario.work,
                        variables={"MEDIAPULSE_CI_TARGET": "no_such_target"},
                        environments={"production": PRODUCTION})  # fmt: skip
    job = runner.run(scenario.workflow("nightly.yml"), "nightly", commit="main",
                     event="schedule", on_main=True)  # fmt: skip
    assert not job.success
    assert job.step("Full refresh, freshness, tests, docs").outcome == "success", job.log()
    assert job.step("Project evaluator report (the baseline for pull requests)").outcome == (
        "failure"
    )
    published = store.completed()
    live = read_stamp(published.path(WAREHOUSE) / "prod.duckdb")
    assert live is not None and before is not None and live.release_id != before.release_id
    state = json.loads((published.path(STATE) / "release.json").read_text())
    assert state["release_id"] == live.release_id, "the warehouse and its state, together"
    refresh = scenario.on_main(store, "refresh.yml", "refresh")
    _ok(refresh)
    out = refresh.step("Refresh with the new raw rows").stdout
    assert f"release {live.release_id} stays live" in out and "notice:" not in out


def test_the_nightly_stops_when_the_warehouse_artifact_expired(
    scenario: Scenario, published: gha.Store, tmp_path: Path
) -> None:
    store = published.copy(tmp_path / "store")
    store.expire(WAREHOUSE)
    before = _digest(store.root)
    job = scenario.on_main(store, "nightly.yml", "nightly")
    step = job.step("Full refresh, freshness, tests, docs")
    assert step.outcome == "failure"
    error = step.stderr.strip().splitlines()[-1]
    assert "prod.duckdb" in error and "production-warehouse" in error and "--start-over" in error
    assert "generating" not in step.stdout, "no demo data replaces the loader's"
    assert job.step("Alert on failure").outcome == "success", job.log()
    # nothing is published but what every finished run leaves: its morning report
    after = _digest(store.root)
    assert _published(after) == _published(before)
    assert (
        after[f"{gha.COMPLETED}/{REPORT}/index.html"]
        != before[f"{gha.COMPLETED}/{REPORT}/index.html"]
    )


def test_the_nightly_stops_when_every_production_artifact_expired_but_the_history_did_not(
    scenario: Scenario, published: gha.Store, tmp_path: Path
) -> None:
    """Warehouse, state and raw data all expired (7 and 14 days), the run history (90 days)
    not: the nightly stops rather than build production again from generated demo data."""
    store = published.copy(tmp_path / "store")
    for artifact in (WAREHOUSE, STATE, RAW, CI_RAW):
        store.expire(artifact)
    before = _digest(store.root)
    job = scenario.on_main(store, "nightly.yml", "nightly")
    step = job.step("Full refresh, freshness, tests, docs")
    assert step.outcome == "failure", job.log()
    error = step.stderr.strip().splitlines()[-1]
    assert "the run history records production (release " in error and "--start-over" in error
    assert "generating" not in step.stdout, "no demo data replaces the loader's"
    assert _published(_digest(store.root)) == _published(before)


def test_a_nightly_dispatched_from_another_branch_stops_before_anything_runs(
    scenario: Scenario, published: gha.Store, tmp_path: Path
) -> None:
    """A branch's unreviewed change, dispatched as the nightly: GitHub does not start the job
    (production's environment admits main only); where that rule was never set, the job's
    first step stops it with one line, before the branch's code is installed or run. Either
    way production, its secrets and its artifacts are untouched. On main, an environment
    secret left unset is named by the same step."""
    store = published.copy(tmp_path / "store")
    before = _digest(store.root)
    commit = scenario.branch("dispatched", _unreviewed)
    nightly, ref = scenario.workflow("nightly.yml"), "refs/heads/dispatched"
    refused = scenario.runner(store).run(
        nightly, "nightly", commit=commit, event="workflow_dispatch", ref=ref
    )
    assert not refused.success and refused.steps == [] and refused.secrets == frozenset()
    assert refused.not_started == (
        'Branch "dispatched" is not allowed to deploy to production due to environment '
        "protection rules."
    )
    unruled = {"production": gha.Environment(PRODUCTION.secrets)}  # no deployment-branch rule
    runner = gha.Runner(scenario.repository, store, scenario.work, environments=unruled)
    job = runner.run(nightly, "nightly", commit=commit, event="workflow_dispatch", ref=ref)
    guard = job.step("Production guard")
    assert [s.outcome for s in job.steps[:2]] == ["success", "failure"], job.log()
    assert {s.outcome for s in job.steps[2:]} == {"skipped"}, job.log()
    assert not (job.workspace / ".venv").exists() and job.uploaded == {}
    [line] = guard.stderr.strip().splitlines()
    assert line.startswith(
        "mediapulse guard: error: nightly writes production and runs only from main, not "
        "refs/heads/dispatched"
    ), line
    assert _digest(store.root) == before

    keyless = {"production": gha.Environment({"MEDIAPULSE_PII_HASH_KEY": "k"}, ("main",))}
    runner = gha.Runner(scenario.repository, store, scenario.work, environments=keyless)
    job = runner.run(nightly, "nightly", commit="main", event="schedule", on_main=True)
    [line] = job.step("Production guard").stderr.strip().splitlines()
    assert f"needs the secret(s) {sealing.KEY_ENV}, empty in this job" in line, line
    assert "Settings → Environments → production" in line
    assert {s.outcome for s in job.steps[2:]} == {"skipped"}, job.log()
    assert _digest(store.root) == before


def _published(digests: dict[str, str]) -> dict[str, str]:
    """What later successful runs download: not the store of every finished run's uploads."""
    return {k: v for k, v in digests.items() if not k.startswith(gha.COMPLETED)}


def test_a_rollback_restores_the_previous_release_and_its_state(
    scenario: Scenario, deployed: tuple[gha.JobResult, gha.Store], tmp_path: Path
) -> None:
    _ok(deployed[0])
    store = deployed[1].copy(tmp_path / "store")
    job = scenario.on_main(store, "rollback.yml", "rollback", event="workflow_dispatch")
    _ok(job)
    assert _mixed_case_titles(store) > 0, "the release before the deploy is live again"
    manifest = artifacts.load_json(store.path(STATE) / "manifest.json", "manifest")
    raw_code = manifest["nodes"]["model.mediapulse.stg_catalog__content"]["raw_code"]
    assert "upper(title)" not in raw_code, "slim CI compares with what is live"
    assert "production rolled back to release " in job.step("Roll back production").stdout
    assert not list((store.path(WAREHOUSE) / "releases").glob("*.duckdb")), "the deploy undone"

    # there is nothing left to roll back to: the workflow refuses and changes nothing
    before = _digest(store.root)
    again = scenario.on_main(store, "rollback.yml", "rollback", event="workflow_dispatch")
    step = again.step("Roll back production")
    assert step.outcome == "failure"
    assert "nothing to roll back to" in step.stderr
    assert _digest(store.root) == before


# -- no personal value in anything a pull request can read ------------------------------------

DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
LOCAL_PART = re.compile(rb"[A-Za-z0-9._%+-]+$")


def _people(raw: Path) -> tuple[set[str], set[str]]:
    """Every e-mail address and full name the loader's raw data holds."""
    with duckdb.connect(str(raw), read_only=True) as con:
        rows = con.execute("select email, full_name from accounts.users").fetchall()
    return {e for e, _ in rows if e}, {n for _, n in rows if n}


def _is_duckdb(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(12)[8:12] == DUCKDB_MAGIC


def _found_in_bytes(data: bytes, emails: set[str], names: set[str]) -> set[str]:
    """The addresses and names a file's bytes hold in clear (UTF-8, or JSON-escaped). Found
    from their anchors (each `@`, each first name) with bytes.find: a regex scan of a large
    binary file takes minutes."""
    found = set()
    locals_at: dict[bytes, set[bytes]] = {}  # domain -> the local parts of its addresses
    for email in emails:
        local_part, _, domain = email.encode().rpartition(b"@")
        locals_at.setdefault(domain, set()).add(local_part)
    at = data.find(b"@")
    while at != -1:
        run = LOCAL_PART.search(data, max(0, at - 64), at)
        for domain, known in locals_at.items() if run else ():
            if data.startswith(domain, at + 1):
                # any tail of the run before `@`: addresses kept end to end run together
                # ("user5@example.comuser6@mail.example")
                local = run.group()
                found |= {(local[-k:] + b"@" + domain).decode()
                          for k in range(1, len(local) + 1) if local[-k:] in known}  # fmt: skip
        at = data.find(b"@", at + 1)
    forms: dict[bytes, list[tuple[bytes, str]]] = {}
    for name in names:
        for form in {name, json.dumps(name)[1:-1]}:
            first = form.split(" ")[0].encode() + b" "
            forms.setdefault(first, []).append((form.encode(), name))
    for first, candidates in forms.items():
        i = data.find(first)
        while i != -1:
            for form, name in candidates:
                end = i + len(form)
                # a lower-case letter next makes it another word ("Smithson"); anything
                # else ends it, the next value's capital too: DuckDB keeps a dictionary of
                # strings end to end ("Rosa DuboisAna Jensen")
                if data.startswith(form, i) and not data[end : end + 1].islower():
                    found.add(name)
            i = data.find(first, i + 1)
    return found


def _found_in_duckdb(path: Path, people: set[str]) -> dict[str, int]:
    """Per text column of every table of a DuckDB file: the distinct values holding an address
    or a name, as the whole value, an address in it, or two words of it in a row (a view shows
    what tables hold, in this file or another)."""
    con = duckdb.connect()
    try:
        con.execute(f"attach '{path}' as searched (read_only)")
        con.execute("create temp table people(v varchar)")
        con.executemany("insert into people values (?)", [[p] for p in sorted(people)])
        columns = con.execute(
            "select c.table_schema, c.table_name, c.column_name from information_schema.columns c "
            "join information_schema.tables t using (table_catalog, table_schema, table_name) "
            "where c.table_catalog = 'searched' and t.table_type = 'BASE TABLE' "
            "and c.data_type = 'VARCHAR'"
        ).fetchall()
        found = {}
        for schema, table, column in columns:
            [(n,)] = con.execute(
                f'with v as (select distinct "{column}" as s from searched."{schema}"."{table}"), '
                "w as (select regexp_split_to_array(s, '[\\s,;:|()<>\"/.]+') as w from v "
                "where s like '% %'), tokens as ("
                "select s as t from v union all "
                f"select unnest(regexp_extract_all(s, '{EMAIL.pattern.decode()}')) from v "
                "where s like '%@%' union all "
                "select unnest(list_transform(range(1, len(w)), i -> w[i] || ' ' || w[i + 1])) "
                "from w) select count(distinct t) from tokens where t in (select v from people)"
            ).fetchall()
            if n:
                found[f"{schema}.{table}.{column}"] = n
        return found
    finally:
        con.close()


def test_no_artifact_and_no_comment_holds_a_personal_value_in_clear(
    scenario: Scenario,
    first_nightly: tuple[gha.JobResult, gha.Store],
    deployed: tuple[gha.JobResult, gha.Store],
    tmp_path: Path,
) -> None:
    """Every file of every artifact any job of this module uploaded (whatever scenarios ran
    before this one), and every PR comment: no generated e-mail address or full name. Text by
    content, DuckDB files by querying every text column of every table."""
    emails, names = _people(first_nightly[0].workspace / "warehouse" / "raw.duckdb")
    assert len(emails) > 100 and len(names) > 100
    files = [f for f in sorted(scenario.work.glob("*.artifacts/*/**/*")) if f.is_file()]
    artifact_names = {f.relative_to(scenario.work).parts[1] for f in files}
    assert {STATE, WAREHOUSE, HISTORY, REPORT} <= artifact_names, artifact_names
    leaks: dict[str, object] = {}
    searched: dict[str, str] = {}  # digest -> first path: copies are searched once
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in searched:
            continue
        searched[digest] = str(path)
        where = str(path.relative_to(scenario.work))
        found = _found_in_bytes(path.read_bytes(), emails, names)
        if found:
            leaks[where] = sorted(found)[:3]
        if _is_duckdb(path):
            columns = _found_in_duckdb(path, emails | names)
            if columns:
                leaks[where] = columns
    for comment in scenario.comments:
        found = _found_in_bytes(comment.encode(), emails, names)
        if found:
            leaks["a PR comment"] = sorted(found)[:3]
    assert not leaks, f"personal values in clear: {leaks}"
    assert {RAW, CI_RAW} <= artifact_names, artifact_names

    # the sealed raw data holds them, but opens only with the production environment's key
    sealed = first_nightly[0].uploaded[RAW] / "raw.duckdb.sealed"
    assert not _is_duckdb(sealed)
    with pytest.raises(duckdb.Error):
        duckdb.connect(str(sealed), read_only=True).close()
    with pytest.raises(MediaPulseError, match="does not open with MEDIAPULSE_RAW_ARTIFACT_KEY"):
        sealing.unseal(sealed, tmp_path / "guessed.duckdb", bytes(32), "a guessed key")
    assert not (tmp_path / "guessed.duckdb").exists()
    sealing.unseal(sealed, tmp_path / "raw.duckdb", bytes.fromhex(RAW_KEY), "the real key")
    assert _people(tmp_path / "raw.duckdb") == (emails, names)
