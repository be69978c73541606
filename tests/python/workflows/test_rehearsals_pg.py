"""The workflows on PostgreSQL, as GitHub runs them when the repository variables choose the
PostgreSQL targets (MEDIAPULSE_PROD_TARGET=postgres, MEDIAPULSE_CI_TARGET=postgres_ci).

Every job runs on a fresh runner (tests/python/support/gha.py) with the repository's variables
and secrets, set up as docs/targets/postgresql-production.md says: production's password and
hash key are secrets of the `production` environment (main only), the CI role's password a
repository secret; the workflows pass on only what each job may have. The server is a
throwaway one with the three roles (same page, "Roles and grants") and raw data its loader
landed. In GitHub's order:
the first nightly publishes a blue-green release and its state (no warehouse file: production
is in the database), a pull request runs as `ci` in its run's own schemas, which are gone at
the end, a deploy of the merged change swaps it live, and a rollback puts the first release
back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from mediapulse.cli.main import main
from mediapulse.data import generate
from mediapulse.release.postgres import kept_suffix

from ..conftest import copy_project
from ..support import gha, pgserver
from ..workflows.test_rehearsals import (
    STATE,
    WAREHOUSE,
    Scenario,
    _ok,
    _upper_titles,
    init_repository,
)

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

DATA = dict(seed=5, users=120, days=6, events_per_user_day=10.0)
MARTS = "analytics_marts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgserver.PgServer]:
    """A server whose loader (the superuser) landed the raw data, with the three roles and the
    grants `mediapulse access-sql` prints, run by the database owner."""
    pg = pgserver.start_server()
    if pg is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql-15)")
    try:
        loader = copy_project(tmp_path_factory.mktemp("loader") / "project")
        params = generate.Params(**DATA, start_date=generate.default_start_date(DATA["days"]))
        generate.generate(loader.raw_path, params)
        cli = ["--project-dir", str(loader.root), "--warehouse-dir", str(loader.warehouse_dir)]
        with pytest.MonkeyPatch.context() as patch:
            for name, value in pg.env.items():
                patch.setenv(name, value)
            assert main([*cli, "load-raw", "--target", "postgres"]) == 0
            for name, value in pg.role_env("transformer").items():
                patch.setenv(name, value)
            sql = _captured(lambda: main([*cli, "access-sql", "--target", "postgres"]))
        pg.execute(sql)
        yield pg
    finally:
        pg.stop()


def _captured(call) -> str:  # type: ignore[no-untyped-def]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert call() == 0
    return out.getvalue()


class PgScenario(Scenario):
    server: pgserver.PgServer

    def runner(self, store: gha.Store) -> gha.Runner:
        pg = self.server
        variables = {
            "MEDIAPULSE_PROD_TARGET": "postgres",
            "MEDIAPULSE_CI_TARGET": "postgres_ci",
            "MEDIAPULSE_PG_HOST": "127.0.0.1",
            "MEDIAPULSE_PG_PORT": str(pg.port),
            "MEDIAPULSE_PG_DATABASE": pgserver.DATABASE,
            "MEDIAPULSE_PG_USER": "transformer",
            "MEDIAPULSE_PG_CI_USER": "ci",
        }
        production = gha.Environment(
            secrets={
                "MEDIAPULSE_PG_PASSWORD": pg.role_password("transformer"),
                "MEDIAPULSE_PII_HASH_KEY": pgserver.PII_HASH_KEY,
            },
            branches=("main",),
        )
        secrets = {"MEDIAPULSE_PG_CI_PASSWORD": pg.role_password("ci")}
        return gha.Runner(self.repository, store, self.work, variables, secrets,
                          environments={"production": production})  # fmt: skip


@pytest.fixture(scope="module")
def scenario(server: pgserver.PgServer, tmp_path_factory: pytest.TempPathFactory) -> PgScenario:
    root = tmp_path_factory.mktemp("github-pg")
    scenario = PgScenario(init_repository(root), root / "runners")
    scenario.server = server
    return scenario


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> gha.Store:
    root = tmp_path_factory.mktemp("store-pg") / "store"
    root.mkdir()
    return gha.Store(root)


def _release_id(store: gha.Store) -> str:
    return json.loads((store.path(STATE) / "release.json").read_text())["release_id"]


def _stamp(server: pgserver.PgServer, schema: str = MARTS) -> str:
    return server.execute(f"select release_id from {schema}._mediapulse_release")[0][0]


def _mixed_case_titles(server: pgserver.PgServer) -> int:
    rows = server.execute(f"select count(*) from {MARTS}.dim_content where title <> upper(title)")
    return rows[0][0]


def _ci_schemas(server: pgserver.PgServer) -> list[str]:
    return [r[0] for r in server.execute("select nspname from pg_namespace where nspname like "
                                         "'ci\\_%' order by 1")]  # fmt: skip


def _production(server: pgserver.PgServer) -> list[tuple]:
    return server.execute(
        "select n.nspname, c.relname, c.oid::bigint from pg_class c join pg_namespace n "
        "on n.oid = c.relnamespace where n.nspname like 'analytics%' order by 1, 2"
    )


def test_the_first_nightly_on_postgres_publishes_a_release_and_its_state(
    scenario: PgScenario, store: gha.Store
) -> None:
    job = scenario.on_main(store, "nightly.yml", "nightly")
    _ok(job)
    guard = job.step("Production guard").stdout
    assert "secrets set: MEDIAPULSE_PG_PASSWORD, MEDIAPULSE_PII_HASH_KEY" in guard, guard
    assert "swap:" in job.step("Full refresh, freshness, tests, docs").stdout
    assert _stamp(scenario.server) == _release_id(store)
    assert not store.has(WAREHOUSE), "production is in the database, not a file"
    # the evaluator ran as `ci` in the run's schemas, which the job dropped
    assert "dropped the" in job.step("Drop this run's CI schemas").stdout
    assert _ci_schemas(scenario.server) == []
    assert _mixed_case_titles(scenario.server) > 0
    # reporter reads the marts the release published, and nothing else
    assert scenario.server.execute(f"select count(*) from {MARTS}.dim_content", role="reporter")


def test_a_pull_request_on_postgres_runs_as_ci_in_schemas_of_its_own(
    scenario: PgScenario, store: gha.Store
) -> None:
    before = _production(scenario.server)
    commit = scenario.branch("upper-titles-pg", _upper_titles)
    checks, comment = scenario.pull_request(store, commit)
    _ok(checks)
    # the CI role's password, nothing of production's: its hash key of its own
    assert checks.environment is None and checks.secrets == {"MEDIAPULSE_PG_CI_PASSWORD"}
    assert "generated this checkout's key" in checks.step("Slim CI").stdout
    slim = (checks.workspace / "ci-output" / "slim-ci.md").read_text()
    assert "| modified | 1 | stg_catalog__content |" in slim and "Slim CI results: passed" in slim
    # the data diff ran on the server, as the CI role: production's mixed-case titles changed
    diff = (checks.workspace / "ci-output" / "data-diff.md").read_text()
    mixed = _mixed_case_titles(scenario.server)
    assert mixed > 0 and diff.count(f"- changed columns: title {mixed} (") == 2, diff
    assert "- breaking: stg_catalog__content" in diff
    drop = checks.step("Drop this run's CI schemas").stdout
    assert "dropped the" in drop and "schemas of CI run ci_" in drop, drop
    assert _ci_schemas(scenario.server) == []
    assert _production(scenario.server) == before, "a pull request never touches production"
    _ok(comment)
    assert comment.comment is not None and "Slim CI results: passed" in comment.comment


def test_a_deploy_on_postgres_swaps_the_merged_change_live_then_a_rollback_undoes_it(
    scenario: PgScenario, store: gha.Store
) -> None:
    first = _release_id(store)
    scenario.merge(gha.git(scenario.repository, "rev-parse", "upper-titles-pg"))
    deploy = scenario.on_main(store, "deploy.yml", "deploy", event="push")
    _ok(deploy)
    second = _release_id(store)
    assert second != first and _stamp(scenario.server) == second
    assert _stamp(scenario.server, MARTS + kept_suffix(first)) == first, "kept for a rollback"
    assert _mixed_case_titles(scenario.server) == 0
    assert _ci_schemas(scenario.server) == []
    rollback = scenario.on_main(store, "rollback.yml", "rollback", event="workflow_dispatch")
    _ok(rollback)
    assert _release_id(store) == first and _stamp(scenario.server) == first
    assert _mixed_case_titles(scenario.server) > 0
    assert (
        "production rolled back to release " + first in rollback.step("Roll back production").stdout
    )


def test_production_is_owned_by_transformer_read_by_ci_and_reporter(scenario: PgScenario) -> None:
    owners = dict(scenario.server.execute(
        "select nspname, pg_get_userbyid(nspowner) from pg_namespace "
        "where nspname like 'analytics%'"
    ))  # fmt: skip
    assert owners and set(owners.values()) == {"transformer"}, owners
    ci_reads = scenario.server.execute(
        f"select has_table_privilege('ci', '{MARTS}.dim_content', 'select'), "
        f"has_table_privilege('ci', '{MARTS}.dim_content', 'insert'), "
        f"has_table_privilege('reporter', '{MARTS}.dim_content', 'select'), "
        f"has_table_privilege('reporter', '{MARTS}.dim_content', 'delete')"
    )
    assert ci_reads == [(True, False, True, False)]
