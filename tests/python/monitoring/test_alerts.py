"""Alert routing (issue 15, step 6), from the user's side: after a job, `mediapulse alert`
sends one message per failed or degraded run (never one per test), a page or a ticket,
addressed to the owners of what broke, to the webhook of its tier; a healthy run sends
nothing; a webhook that fails is reported and never changes the job's result.

The runs are the session's real nightly (healthy, and the owners and criticality its nodes
recorded) plus, for the rarer cases, rows stored through `history.store()` beside it; a local
HTTP server stands in for Slack.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest

from mediapulse.cli.main import main
from mediapulse.core.project import Project
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import alerts, history
from mediapulse.monitoring.alerts import PAGE, TICKET, Alert, Directory, Findings, Item, Owner, Run

PAGE_ENV, TICKET_ENV, LEGACY_ENV = (
    "MEDIAPULSE_PAGE_WEBHOOK", "MEDIAPULSE_TICKET_WEBHOOK", "MEDIAPULSE_WEBHOOK_URL",
)  # fmt: skip
SECRET = "secret-token-123"


# -- a webhook that records what it receives ---------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict]]] = []
    status: ClassVar[int] = 200

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Receiver.received.append((self.path.split("/")[1], json.loads(self.rfile.read(length))))
        self.send_response(_Receiver.status)
        self.end_headers()
        self.wfile.write(b"invalid_payload" if _Receiver.status >= 400 else b"ok")


@pytest.fixture
def webhooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict]]]:
    """A page and a ticket webhook on one local server; yields what it received, as
    (tier, payload)."""
    _Receiver.received, _Receiver.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv(PAGE_ENV, f"{base}/page/{SECRET}")
    monkeypatch.setenv(TICKET_ENV, f"{base}/ticket/{SECRET}")
    yield _Receiver.received
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No webhook, summary or GitHub run leaking in from the developer's shell."""
    for name in (PAGE_ENV, TICKET_ENV, LEGACY_ENV, "GITHUB_STEP_SUMMARY", "GITHUB_RUN_ID",
                 "MEDIAPULSE_ALERT_TIMEOUT_S"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def check_slack(payload: dict[str, Any]) -> None:
    """What Slack's incoming webhooks accept: a `text` fallback and Block Kit blocks within
    its limits (50 blocks, a header's 150 characters, a section's 3000)."""
    assert set(payload) <= {"text", "blocks"}, payload.keys()
    assert isinstance(payload["text"], str) and payload["text"].strip()
    assert len(payload["text"]) <= 3000
    blocks = payload["blocks"]
    assert 1 <= len(blocks) <= 50
    for block in blocks:
        kind = block["type"]
        assert kind in ("header", "section", "divider", "context"), kind
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        elif kind == "section":
            assert block["text"]["type"] == "mrkdwn"
            assert 0 < len(block["text"]["text"]) <= 3000
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10
            for element in block["elements"]:
                assert element["type"] in ("mrkdwn", "plain_text")
                assert 0 < len(element["text"]) <= 3000
    json.dumps(payload)  # serialisable as is


def _all_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload)


def _sections_of(payload: dict[str, Any], owner: str) -> list[str]:
    """The texts of the message's sections that address ``owner``."""
    return [b["text"]["text"] for b in payload["blocks"]
            if b["type"] == "section" and b["text"]["text"].startswith(f"*{owner}*")]  # fmt: skip


# -- the pure core: what pages, what tickets, what a message looks like -----------------------

OWNERS = Directory(
    owners={
        "core": Owner("core", "Data Platform", "data-platform@mediapulse.example"),
        "engagement": Owner("engagement", "Product Analytics", "pa@mediapulse.example"),
        "finance": Owner("finance", "Finance Analytics", "fa@mediapulse.example"),
    },
    critical_sources=frozenset({"source.mediapulse.streaming.watch_events"}),
)


def _run(job: str = "nightly", status: str = "success") -> dict[str, Any]:
    return {"run_id": "r-1", "job": job, "target": "prod", "run_status": status,
            "started_at": datetime(2026, 12, 1, 2, 0), "git_revision": "0123456789abcdef",
            "release_id": None}  # fmt: skip


def _failing(name: str, status: str = "fail", critical: bool = False,
             owner: str | None = None, failures: int = 3) -> dict[str, Any]:  # fmt: skip
    return {"unique_id": f"test.mediapulse.{name}", "test_name": name, "node_status": status,
            "failures": failures, "message": f"Got {failures} results", "is_critical": critical,
            "tested_node": "model.mediapulse.fct_watch_sessions", "owner": owner}  # fmt: skip


def test_a_healthy_run_gives_no_alert() -> None:
    assert alerts.assess(_run(), Findings(), OWNERS) is None
    assert alerts.assess(_run("refresh", "skipped"), Findings(), OWNERS) is None


NODE_ERROR = {"unique_id": "model.mediapulse.m", "node_name": "m", "resource_type": "model",
              "node_status": "error", "message": "boom", "is_critical": True,
              "owner": None}  # fmt: skip
STALE_MART = {"unique_id": "model.mediapulse.fct_watch_sessions",
              "model_name": "fct_watch_sessions", "owner": "engagement", "freshness_slo_hours": 3,
              "hours_since_last_build": 5.5, "last_built_at": datetime(2026, 12, 1)}  # fmt: skip
RENAMED = {"source_name": "accounts", "table_name": "users", "column_name": "userId",
           "change_kind": "renamed", "renamed_from": "user_id", "declared_type": "bigint",
           "actual_type": "bigint", "severity": "error"}  # fmt: skip
ADDED = {"source_name": "ads", "table_name": "campaigns", "column_name": "note",
         "change_kind": "added", "renamed_from": None, "declared_type": None,
         "actual_type": "varchar", "severity": "warn"}  # fmt: skip
SLOW = {"unique_id": "model.mediapulse.fct_watch_sessions", "model_name": "fct_watch_sessions",
        "owner": "engagement", "is_critical": True, "execution_time_s": 30.0,
        "baseline_median_s": 1.0, "anomaly_score": 50.0}  # fmt: skip
LOST_LOAD = {"unique_id": "source.mediapulse.streaming.watch_events",
             "relation": "raw.streaming.watch_events", "rows_added": 0.0,
             "baseline_median_rows_added": 5000.0, "anomaly_score": -9.0, "is_critical": None,
             "owner": None}  # fmt: skip
SNAPSHOT_SPIKE = {"unique_id": "snapshot.mediapulse.content_snapshot",
                  "relation": "prod.snapshots.content_snapshot", "rows_added": 900.0,
                  "baseline_median_rows_added": 10.0, "anomaly_score": 12.0,
                  "is_critical": False, "owner": None}  # fmt: skip


@pytest.mark.parametrize(
    ("run", "findings", "tier"),
    [
        (_run("nightly", "failed"), Findings(), PAGE),  # a failed production release
        (_run("deploy", "failed"), Findings(), PAGE),
        (_run("build", "failed"), Findings(), TICKET),  # a developer's build is no release
        (_run("build", "failed"), Findings(failing_tests=[_failing("t", critical=True)]), PAGE),
        (_run("build", "failed"), Findings(failing_tests=[_failing("t")]), TICKET),
        (_run(), Findings(failing_tests=[_failing("t", "warn", critical=True)]), TICKET),
        (_run("build", "failed"), Findings(failed_nodes=[NODE_ERROR]), PAGE),
        (_run(), Findings(stale_marts=[STALE_MART]), PAGE),
        (_run("nightly", "failed"), Findings(schema_changes=[RENAMED]), PAGE),
        (_run(), Findings(schema_changes=[ADDED]), TICKET),
        (_run(), Findings(slow_models=[SLOW]), TICKET),  # slowness never pages
        (_run(), Findings(row_anomalies=[LOST_LOAD]), PAGE),  # a critical source lost rows
        (_run(), Findings(row_anomalies=[SNAPSHOT_SPIKE]), TICKET),
    ],
)
def test_tiers(run: dict, findings: Findings, tier: str) -> None:
    alert = alerts.assess(run, findings, OWNERS)
    assert alert is not None and alert.tier == tier


def test_items_go_to_their_groups_owner_and_the_rest_to_the_platform() -> None:
    findings = Findings(failing_tests=[
        _failing("not_null_fct_watch_sessions_session_id", critical=True, owner="engagement"),
        _failing("source_not_null_ads_campaigns_id"),  # no group: the platform's
    ])  # fmt: skip
    alert = alerts.assess(_run("nightly", "failed"), findings, OWNERS)
    assert alert is not None and alert.tier == PAGE
    by_owner = {owner.name: [i.subject for i in items] for owner, items in alert.by_owner()}
    assert by_owner["Product Analytics"] == ["not_null_fct_watch_sessions_session_id"]
    assert "source_not_null_ads_campaigns_id" in by_owner["Data Platform"]
    # the release's failure is the platform's too, and pages come first
    platform = dict(alert.by_owner())[OWNERS.platform]
    assert [i.kind for i in platform] == [alerts.RELEASE_FAILED, alerts.TEST_FAILED]
    assert alert.counts() == {alerts.RELEASE_FAILED: 1, alerts.TEST_FAILED: 2}


def _big_alert(tests: int, groups: int = 3) -> Alert:
    directory = Directory(
        owners={f"g{i}": Owner(f"g{i}", f"Team {i}", f"t{i}@x.example") for i in range(groups)}
        | {"core": Owner("core", "Data Platform", None)},
    )
    findings = Findings(failing_tests=[
        _failing(f"test_{n:03d}_" + "x" * 300, critical=n % 2 == 0, owner=f"g{n % groups}",
                 failures=n) | {"message": "<&> " * 400}
        for n in range(tests)
    ])  # fmt: skip
    alert = alerts.assess(_run("nightly", "failed"), findings, directory)
    assert alert is not None
    return alert


@pytest.mark.parametrize(("tests", "groups"), [(200, 3), (500, 80)])
def test_a_storm_is_one_short_message_with_counts(tests: int, groups: int) -> None:
    alert = _big_alert(tests, groups)
    payload = alerts.slack_payload(alert, "https://github.example/acme/mp/actions/runs/7")
    check_slack(payload)
    assert len(json.dumps(payload)) < 40_000
    assert f"{tests} failing tests" in payload["text"]
    assert "and " in _all_text(payload) and " more" in _all_text(payload)
    # dbt's message is escaped for Slack's mrkdwn: only links use < and >
    assert "<&>" not in _all_text(payload) and "&lt;&amp;&gt;" in _all_text(payload)
    assert "<https://github.example/acme/mp/actions/runs/7|" in _all_text(payload)


def test_routing_tiers_to_webhooks() -> None:
    env = {PAGE_ENV: "https://p", TICKET_ENV: "https://t", LEGACY_ENV: "https://l"}
    assert alerts.webhook_for(PAGE, env)[0] == PAGE_ENV
    assert alerts.webhook_for(TICKET, env)[0] == TICKET_ENV
    # a page must reach someone: with no page webhook it goes to the ticket channel
    assert alerts.webhook_for(PAGE, {TICKET_ENV: "https://t"})[0] == TICKET_ENV
    assert alerts.webhook_for(PAGE, {LEGACY_ENV: "https://l"})[0] == LEGACY_ENV
    # a warning never pages anyone
    assert alerts.webhook_for(TICKET, {PAGE_ENV: "https://p"})[0] is None
    assert alerts.webhook_for(TICKET, {LEGACY_ENV: "https://l"})[0] == LEGACY_ENV
    assert alerts.webhook_for(PAGE, {})[0] is None


def test_a_payload_names_the_run_tier_and_owners() -> None:
    alert = Alert(
        run=Run("r-9", "deploy", "prod", "failed", datetime(2026, 12, 1, 9), "abcdef123456", None),
        items=[Item(alerts.RELEASE_FAILED, PAGE, "deploy", "production stays on release R1")],
        directory=OWNERS,
        live_release="R1",
    )
    payload = alerts.slack_payload(alert, None)
    check_slack(payload)
    text = _all_text(payload)
    assert payload["text"].startswith("MediaPulse page:")
    for needle in ("deploy", "prod", "r-9", "R1", "Data Platform", "abcdef1"):
        assert needle in text, needle


# -- from a real run history, through the command ---------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture
def prod(after_nightly: Project, tmp_path: Path) -> Project:
    """The real nightly's run history (its monitoring views included), in a warehouse of the
    test's own; the project is the nightly's (its groups and sources)."""
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    source = history.duckdb_path(resolve(after_nightly, "prod"))
    shutil.copy2(source, warehouse / source.name)
    return Project.discover(after_nightly.root, warehouse)


def _alert(project: Project, *args: str) -> int:
    return main(["--project-dir", str(project.root), "--warehouse-dir",
                 str(project.warehouse_dir), "alert", "--target", "prod", *args])  # fmt: skip


def _node(kind: str, name: str, status: str, **extra: Any) -> dict[str, Any]:
    unique_id = extra.pop("unique_id", f"{kind}.mediapulse.{name}")
    return {"unique_id": unique_id, "resource_type": kind, "name": name, "status": status,
            "execution_time_s": 0.1, "rows_affected": None, "failures": None, "message": "",
            "tested_node": None, "is_critical": False, "owner": None, "started_at": None,
            **extra}  # fmt: skip


def _store(
    project: Project, job: str, status: str = "success", nodes: Sequence[dict] = (), *,
    sizes: dict[str, int] | None = None, started: datetime | None = None,
) -> str:  # fmt: skip
    run_id = f"{job}-{uuid.uuid4().hex[:12]}"
    started = started or _now()
    record = history.RunRecord(
        run={"run_id": run_id, "job": job, "target": "prod", "git_revision": "0123456789abcdef",
             "started_at": started, "duration_s": 60.0, "dbt_seconds": 50.0, "status": status,
             "release_id": None, "dbt_version": "1.10.0", "nodes": len(nodes),
             "recorded_at": started},
        node_results=[{**node, "run_id": run_id} for node in nodes],
        relation_sizes=[{"run_id": run_id, "unique_id": uid, "relation": uid, "row_count": n,
                         "measured_at": started} for uid, n in (sizes or {}).items()],
    )  # fmt: skip
    history.store(resolve(project, "prod"), record)
    return run_id


def _live_release(project: Project) -> str:
    rows = history.read(resolve(project, "prod"), "select release_id from monitoring.runs "
                        "where job = 'nightly' and release_id is not null")  # fmt: skip
    return rows[0][0]


@pytest.mark.dbt
def test_a_healthy_nightly_sends_nothing(
    prod: Project, webhooks: list, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _alert(prod, "--job", "nightly") == 0
    out = capsys.readouterr().out
    assert "no alert" in out and "healthy" in out, out
    assert webhooks == []


@pytest.mark.dbt
def test_a_failed_release_pages_naming_the_job_release_and_owners(
    prod: Project, webhooks: list, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    revenue = "model.mediapulse.fct_subscription_revenue"
    run_id = _store(prod, "nightly", "failed", [
        _node("model", "fct_subscription_revenue", "error", is_critical=True, owner="finance",
              message="Runtime Error: division by zero"),
        _node("model", "revenue_by_content", "skipped", is_critical=True, owner="finance"),
        _node("test", "unique_fct_subscription_revenue_id", "skipped", tested_node=revenue),
    ])  # fmt: skip
    summary = tmp_path / "alert.md"
    assert _alert(prod, "--job", "nightly", "--summary", str(summary)) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    [(tier, payload)] = webhooks
    assert tier == "page"
    check_slack(payload)
    text = _all_text(payload)
    for needle in ("nightly", run_id, _live_release(prod), "Data Platform", "Finance Analytics",
                   "fct_subscription_revenue", "division by zero"):  # fmt: skip
        assert needle in text, needle
    assert "delivered" in out and PAGE_ENV in out
    assert "page" in summary.read_text() and "delivered" in summary.read_text()


@pytest.mark.dbt
def test_a_critical_test_error_pages_the_models_group_owner(prod: Project, webhooks: list) -> None:
    # the test names no group: its model's, as the nightly recorded it, is the owner
    _store(prod, "refresh", "failed", [
        _node("test", "not_null_fct_watch_sessions_session_id", "fail", failures=12,
              tested_node="model.mediapulse.fct_watch_sessions", message="Got 12 results"),
    ])  # fmt: skip
    assert _alert(prod, "--job", "refresh") == 0
    [(tier, payload)] = webhooks
    assert tier == "page"
    check_slack(payload)
    [section] = _sections_of(payload, "Product Analytics")
    assert "not_null_fct_watch_sessions_session_id" in section
    assert "product-analytics@mediapulse.example" in section


@pytest.mark.dbt
def test_warnings_and_anomalies_only_are_one_ticket(prod: Project, webhooks: list) -> None:
    # eight ordinary refreshes (a week of judged row counts: module anomalies' MIN_WEEK), then
    # one whose model is slow (by more than the 30-s minimum effect) and whose snapshot gained
    # far more rows than usual, with a warning: degraded, not broken
    model = "model.mediapulse.fct_daily_engagement"
    snapshot = "snapshot.mediapulse.subscriptions_snapshot"
    start = _now() - timedelta(hours=9)
    for hour in range(8):
        usual = _node("model", "fct_daily_engagement", "success", unique_id=model,
                      execution_time_s=1.0, is_critical=True, owner="engagement")  # fmt: skip
        started = start + timedelta(hours=hour)
        _store(prod, "refresh", nodes=[usual], sizes={snapshot: 1000 + 100 * hour}, started=started)
    _store(prod, "refresh", nodes=[
        _node("model", "fct_daily_engagement", "success", unique_id=model, execution_time_s=90.0,
              is_critical=True, owner="engagement"),
        _node("test", "dbt_utils_recency_dim_users_v1", "warn", failures=1,
              tested_node="model.mediapulse.dim_users.v1", message="Got 1 result"),
    ], sizes={snapshot: 1700 + 20_000})  # fmt: skip
    assert _alert(prod, "--job", "refresh") == 0
    [(tier, payload)] = webhooks
    assert tier == "ticket"
    check_slack(payload)
    text = _all_text(payload)
    for needle in ("fct_daily_engagement", "subscriptions_snapshot",
                   "dbt_utils_recency_dim_users_v1"):  # fmt: skip
        assert needle in text, needle


@pytest.mark.dbt
def test_a_critical_mart_stale_beyond_its_slo_pages(prod: Project, webhooks: list) -> None:
    with duckdb.connect(
        str(history.duckdb_path(resolve(prod, "prod")))
    ) as con:  # the nightly, a day ago
        con.execute("update monitoring.runs set started_at = started_at - interval 30 hour")
    _store(prod, "refresh", "skipped")  # nothing new: nothing rebuilt
    assert _alert(prod, "--job", "refresh") == 0
    [(tier, payload)] = webhooks
    assert tier == "page"
    check_slack(payload)
    [engagement] = _sections_of(payload, "Product Analytics")
    assert "fct_watch_sessions" in engagement and "3 h" in engagement


@pytest.mark.dbt
def test_two_hundred_failing_tests_are_one_message(prod: Project, webhooks: list) -> None:
    tested = ["model.mediapulse.fct_watch_sessions", "model.mediapulse.dim_users.v1",
              "model.mediapulse.revenue_by_content", "source.mediapulse.ads.campaigns"]  # fmt: skip
    _store(prod, "nightly", "failed", [
        _node("test", f"accepted_values_{n:03d}", "fail", failures=n + 1,
              tested_node=tested[n % 4], message=f"Got {n + 1} results")
        for n in range(200)
    ])  # fmt: skip
    assert _alert(prod, "--job", "nightly") == 0
    [(tier, payload)] = webhooks
    assert tier == "page"
    check_slack(payload)
    assert "200 failing tests" in payload["text"]
    assert " more" in _all_text(payload)


@pytest.mark.dbt
@pytest.mark.parametrize("failure", ["http 500", "no answer"])
def test_a_webhook_that_fails_is_reported_and_the_job_result_stands(
    prod: Project, webhooks: list, failure: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    _store(prod, "deploy", "failed")
    silent = socket.socket()  # accepts connections (the kernel's backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    if failure == "http 500":
        _Receiver.status = 500
    else:
        monkeypatch.setenv(PAGE_ENV, f"http://127.0.0.1:{silent.getsockname()[1]}/page/{SECRET}")
    summary = tmp_path / "alert.md"
    step_summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    try:
        code = _alert(prod, "--job", "deploy", "--timeout", "0.5", "--summary", str(summary))
    finally:
        silent.close()
    out = capsys.readouterr().out
    assert code == 0
    reason = "HTTP 500" if failure == "http 500" else "did not answer within 0.5 s"
    assert "alert not delivered" in out and reason in out, out
    assert SECRET not in out
    for written in (summary, step_summary):
        assert "alert not delivered" in written.read_text() and reason in written.read_text()


@pytest.mark.dbt
def test_unset_webhooks_send_nothing_and_say_so(
    prod: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(prod, "deploy", "failed")
    assert _alert(prod, "--job", "deploy") == 0
    out = capsys.readouterr().out
    assert "alert not sent" in out and PAGE_ENV in out and TICKET_ENV in out, out


@pytest.mark.dbt
def test_dry_run_prints_the_payload_and_sends_nothing(
    prod: Project, webhooks: list, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = _store(prod, "deploy", "failed")
    assert _alert(prod, "--run-id", run_id, "--dry-run") == 0
    out = capsys.readouterr().out
    payload = json.loads(out[out.index("{") : out.rindex("}") + 1])
    check_slack(payload)
    assert run_id in payload["text"]
    assert webhooks == []


@pytest.mark.dbt
def test_a_job_that_failed_before_recording_a_run_still_pages(
    prod: Project, webhooks: list, capsys: pytest.CaptureFixture[str]
) -> None:
    # the history holds only the nightly: no refresh ran in the last 30 minutes
    assert _alert(prod, "--job", "refresh", "--within", "30", "--job-failed") == 0
    [(tier, payload)] = webhooks
    assert tier == "page"
    check_slack(payload)
    assert "refresh" in payload["text"] and "recorded no run" in _all_text(payload)
