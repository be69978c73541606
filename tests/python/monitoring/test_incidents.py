"""Incidents and the change behind them (issue 30, items 3-5), from the user's side.

The scenario is real: production after the session's nightly, a run history of hourly
refreshes before it, then

- a pull request that filters a mart's rows (`fct_subscription_revenue` without the ad_supported
  plan): slim CI and its data diff, merged and deployed, the diff kept with the release
  (`mediapulse keep-diff`), then the next refresh: its drop is one "expected" ticket naming the
  release, its commit and the PR's diff; the refresh after it resolves the incident;
- the same rows lost by the loader (the ad_supported subscriptions gone from the raw data), no
  release: a page, once; the next hour's same loss sends nothing; back in band, "resolved" goes
  to the page channel;
- the morning report shows each incident with its chart (rendered in headless Chromium).

Alerts go to a local webhook (test_alerts' receiver); dbt runs through `mediapulse`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mediapulse.cli.main import main
from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import alerts, changes, history, incidents
from mediapulse.monitoring.alerts import PAGE, TICKET

from ..conftest import clone_built
from ..support.browser import open_page
from . import test_alerts as alerting

# test_alerts' webhook receiver and clean environment, as fixtures of this module too
webhooks, _clean_env, check_slack = alerting.webhooks, alerting._clean_env, alerting.check_slack

MART = "model.mediapulse.fct_subscription_revenue"
# the pull request: revenue without the ad_supported plan, from the months both the mart and the
# revenue's allocation read (the allocation still adds up)
MODEL = "models/intermediate/finance/int_subscription_months_prorated.sql"
FILTER = ("    from days_counted\n",
          "    from days_counted\n    where plan_code != 'ad_supported'\n")  # fmt: skip


# -- the rules (pure) ------------------------------------------------------------------------


def _judged(
    score: float | None, value: float = -100.0, anomaly: bool = True, status: str | None = None
) -> incidents.Judged:
    return incidents.Judged(MART, "rows_added", value, 0.0, score, anomaly, status)


def _run(n: int) -> dict[str, Any]:
    return {"run_id": f"r{n}", "job": "refresh", "target": "prod",
            "started_at": datetime(2026, 12, 1, n)}  # fmt: skip


def _no_release(_: incidents.Judged) -> tuple[bool, str, str | None]:
    return False, "no release", None


def test_consecutive_anomalies_are_one_incident_alerted_on_open_worse_and_resolved() -> None:
    [opened] = incidents.advance({}, [_judged(-10.0)], _run(1), _no_release)
    assert opened.kind == incidents.OPENED and opened.incident.status == incidents.OPEN
    state = {opened.incident.key: opened.incident}
    [again] = incidents.advance(state, [_judged(-12.0)], _run(2), _no_release)
    assert again.kind == incidents.ONGOING  # not worse enough to say so again
    state = {again.incident.key: again.incident}
    [worse] = incidents.advance(state, [_judged(-16.0)], _run(3), _no_release)
    assert worse.kind == incidents.WORSENED and worse.incident.alerted_score == -16.0
    state = {worse.incident.key: worse.incident}
    assert incidents.advance(state, [_judged(None, anomaly=False)], _run(4), _no_release) == []
    [back] = incidents.advance(state, [_judged(0.5, 1.0, False)], _run(5), _no_release)
    assert back.kind == incidents.RESOLVED and back.incident.resolved_run_id == "r5"
    assert back.incident.incident_id == opened.incident.incident_id


def test_only_a_new_anomaly_alerts_and_a_shift_accepted_as_the_new_normal_closes_it() -> None:
    """The detector's statuses (module anomalies): a level shift's follow-up values stay
    anomalous (`persisting`) but are the incident going on, however high their score; the
    shift accepted after its runs closes the incident with a message saying so."""
    first = _judged(10.0, 300.0, status="anomaly")
    [opened] = incidents.advance({}, [first], _run(1), _no_release)
    assert opened.kind == incidents.OPENED
    state = {opened.incident.key: opened.incident}
    # twice the score it was alerted with, but the same shift: no update
    [again] = incidents.advance(state, [_judged(20.0, 310.0, status="persisting")], _run(2),
                                _no_release)  # fmt: skip
    assert again.kind == incidents.ONGOING and again.incident.peak_score == 20.0
    state = {again.incident.key: again.incident}
    [accepted] = incidents.advance(state, [_judged(9.0, 305.0, False, "accepted")], _run(3),
                                   _no_release)  # fmt: skip
    assert accepted.kind == incidents.ACCEPTED and accepted.incident.status == incidents.CLOSED
    assert accepted.incident.resolution == incidents.ACCEPTED
    payload = alerts.resolved_payload(_run(3), [accepted], None)
    check_slack(payload)
    text = payload["blocks"][1]["text"]["text"]  # the incidents' lines
    assert "accepted as the new normal" in text and "back in its band" not in text, text
    assert opened.incident.incident_id in text  # a new message naming the incident
    # a shift's follow-up with no incident open (opened before incidents were kept) opens none
    assert incidents.advance({}, [_judged(20.0, 310.0, status="persisting")], _run(4),
                             _no_release) == []  # fmt: skip
    # a series marked an incident is never accepted: the detector keeps it `persisting`
    [marked] = incidents.advance(state, [_judged(9.0, 305.0, status="persisting")], _run(3),
                                 _no_release)  # fmt: skip
    assert marked.kind == incidents.ONGOING and marked.incident.status == incidents.OPEN
    # back in its band: resolved, said so
    [back] = incidents.advance(state, [_judged(0.2, 1.0, False, "normal")], _run(5), _no_release)
    assert back.kind == incidents.RESOLVED and back.incident.resolution == incidents.RESOLVED
    assert (
        "back in its band"
        in alerts.resolved_payload(_run(5), [back], None)["blocks"][1]["text"]["text"]
    )


def test_a_new_anomaly_the_other_way_is_another_incident_alerted() -> None:
    """A lost day after a doubled one is news: a new incident (alerted), not the spike's
    incident going on."""
    [spike] = incidents.advance({}, [_judged(40.0, 3000.0, status="anomaly")], _run(1),
                                _no_release)  # fmt: skip
    state = {spike.incident.key: spike.incident}
    events = incidents.advance(state, [_judged(-8.0, 0.0, status="anomaly")], _run(2),
                               _no_release)  # fmt: skip
    assert [e.kind for e in events] == [incidents.SUPERSEDED, incidents.OPENED]
    ended, lost = events
    assert ended.incident.incident_id == spike.incident.incident_id
    assert ended.incident.status == incidents.CLOSED
    assert lost.incident.incident_id != spike.incident.incident_id
    assert lost.incident.status == incidents.OPEN and lost.incident.alerted_score == -8.0


def _release(diff: changes.ModelDiff | None, known: bool = True) -> changes.Release:
    return changes.Release("R2", "deploy", "abcdef1234", None, "42", known,
                           {MART: diff} if diff else {})  # fmt: skip


@pytest.mark.parametrize(
    ("deviation", "release", "expected", "says"),
    [
        (
            -700.0,
            _release(changes.ModelDiff("m", "compared", 3000, 2300, removed=700)),
            True,
            "expected: changed by release R2 (deploy, commit abcdef1, PR #42)",
        ),
        (
            -2000.0,
            _release(changes.ModelDiff("m", "compared", 3000, 2300, removed=700)),
            False,
            "first suspect: release R2",
        ),  # far more than predicted
        (
            700.0,
            _release(changes.ModelDiff("m", "compared", 3000, 2300, removed=700)),
            False,
            "not this",
        ),  # the other way
        (-700.0, _release(None), False, "its data diff did not cover this model"),
        (-700.0, _release(None, known=False), False, "no data diff of PR #42 was kept"),
    ],
)
def test_a_release_is_the_expected_change_or_the_first_suspect(
    deviation: float, release: changes.Release, expected: bool, says: str
) -> None:
    cause = changes.judge(MART, "rows_added", deviation, [release], "refresh")
    assert cause.expected is expected and says in cause.text, cause.text
    none = changes.judge(MART, "rows_added", deviation, [], "refresh")
    assert not none.expected and "no release since the previous refresh run" in none.text


def test_the_merged_pull_request_comes_from_githubs_merge_or_squash_message() -> None:
    assert changes.merged_pull_request("Merge pull request #42 from acme/filter\n\nx") == "42"
    assert changes.merged_pull_request("Drop ad_supported plans from revenue (#7)") == "7"
    assert changes.merged_pull_request("fix a typo") is None


# -- the scenario, on real runs --------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _cli(project: Project, *args: str) -> int:
    return main(["--project-dir", str(project.root), *args])


@pytest.fixture(scope="module")
def hourly(after_nightly: Project, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Production after the nightly, with nine hourly refreshes recorded after it (the sizes
    the nightly left: nothing new each hour), enough for a baseline."""
    project = clone_built(after_nightly, tmp_path_factory.mktemp("hourly") / "project")
    engine = resolve(project, "prod")
    manifest = artifacts.load_json(project.root / "state" / "manifest.json", "manifest")
    sizes = history.measure_sizes(engine, manifest)
    [(nightly,)] = history.read(engine, "select max(started_at) from monitoring.runs")
    step = (_now() - nightly) / 11
    for hour in range(1, 10):  # a week's worth of judged values (module anomalies' MIN_WEEK)
        _record(project, nightly + step * hour, sizes)
    return project


def _record(project: Project, started: datetime, sizes: dict[str, int]) -> str:
    run_id = f"refresh-{uuid.uuid4().hex[:12]}"
    record = history.RunRecord(
        run={"run_id": run_id, "job": "refresh", "target": "prod",
             "git_revision": history.git_revision(project), "started_at": started,
             "duration_s": 30.0, "dbt_seconds": 20.0, "status": "success", "release_id": None,
             "dbt_version": "1.11.0", "nodes": 0, "recorded_at": started},
        relation_sizes=[{"run_id": run_id, "unique_id": uid, "relation": uid, "row_count": n,
                         "measured_at": started} for uid, n in sizes.items()],
    )  # fmt: skip
    history.store(resolve(project, "prod"), record)
    return run_id


@pytest.fixture
def production(hourly: Project, tmp_path: Path) -> Iterator[Project]:
    yield clone_built(hourly, tmp_path / "project")


def _raw(project: Project, sql: str) -> None:
    with duckdb.connect(str(project.raw_path)) as con:
        con.execute(sql)


def _new_title(project: Project) -> None:
    """The loader brings one new title: something new for a refresh, no anomaly."""
    _raw(project, "insert into catalog.content select * replace ((select max(content_id) + 1 "
         "from catalog.content) as content_id, (now() at time zone 'UTC')::timestamp as "
         "loaded_at) from catalog.content where content_type = 'movie' order by content_id "
         "limit 1")  # fmt: skip


def _refresh(project: Project) -> None:
    assert _cli(project, "refresh", "--target", "prod", "--artifacts",
                str(project.root / "state")) == 0  # fmt: skip


def _alert(project: Project) -> int:
    return _cli(project, "alert", "--target", "prod", "--job", "refresh")


def _refresh_and_alert(project: Project, webhooks: list) -> tuple[str, dict[str, Any]]:
    """A refresh and its alert: the one message it sent (tier, Slack payload), checked."""
    _refresh(project)
    assert _alert(project) == 0
    [(tier, payload)] = webhooks
    check_slack(payload)
    return tier, payload


def _release_id(project: Project) -> str:
    return json.loads((project.root / "state" / "release.json").read_text())["release_id"]


def _text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


@pytest.mark.dbt
def test_a_merged_filter_is_an_expected_ticket_then_resolved(
    production: Project, webhooks: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = production.root / MODEL
    assert FILTER[0] in path.read_text()
    path.write_text(path.read_text().replace(*FILTER))
    # the pull request: slim CI and its data diff against production
    out = tmp_path / "ci-output"
    _cli(production, "slim-ci", "--target", "ci", "--state", str(production.root / "state"))
    assert _cli(production, "diff", "--target", "ci", "--json", str(out / "data-diff.json")) == 0
    [predicted] = [d for d in json.loads((out / "data-diff.json").read_text())
                   if d["unique_id"] == MART]  # fmt: skip
    removed = predicted["rows_base"] - predicted["rows_head"]
    assert removed > 0 and predicted["removed"] == removed, predicted
    # merged and deployed; the deploy keeps the PR's diff with its release
    assert _cli(production, "deploy", "--target", "prod", "--artifacts",
                str(production.root / "state")) == 0  # fmt: skip
    deployed = _release_id(production)
    monkeypatch.setenv("COMMIT_MESSAGE", "Merge pull request #42 from acme/no-ad_supported-revenue")
    kept = ["--diff", str(out / "data-diff.json"), "--commit-message-env", "COMMIT_MESSAGE"]
    assert _cli(production, "keep-diff", "--target", "prod", *kept) == 0
    monkeypatch.delenv("COMMIT_MESSAGE")
    # the next hourly refresh sees the mart smaller: expected, a ticket
    _new_title(production)
    tier, payload = _refresh_and_alert(production, webhooks)
    text = _text(payload)
    assert tier == TICKET, text
    for needle in ("fct_subscription_revenue", f"expected: changed by release {deployed}",
                   "PR #42", f"{predicted['rows_base']:,} → {predicted['rows_head']:,} rows",
                   f"-{removed:,} rows added"):  # fmt: skip
        assert needle in text, needle
    # an hour later the mart grows as usual again: the incident is resolved, in the same channel
    webhooks.clear()
    _new_title(production)
    tier, payload = _refresh_and_alert(production, webhooks)
    assert tier == TICKET and payload["text"].startswith("MediaPulse resolved: ")
    assert "fct_subscription_revenue back in its band" in _text(payload)


@pytest.mark.dbt
def test_the_same_drop_from_the_loader_pages_once_then_resolves(
    production: Project, webhooks: list, tmp_path: Path
) -> None:
    _raw(production, "delete from billing.subscriptions where plan_code = 'ad_supported'")
    tier, payload = _refresh_and_alert(production, webhooks)
    text = _text(payload)
    assert tier == PAGE, text
    assert "fct_subscription_revenue" in text
    assert "no release since the previous refresh run: the data changed, not the code" in text
    assert "expected" not in text
    # the next hour loses as many again: the same incident goes on, nobody is paged again
    engine = resolve(production, "prod")
    manifest = artifacts.load_json(production.root / "state" / "manifest.json", "manifest")
    sizes = history.measure_sizes(engine, manifest)
    webhooks.clear()
    lost = {uid: n - (n0 - n) for uid, n in sizes.items() for n0 in [_before(production, uid)]}
    _record(production, _now(), lost)
    assert _alert(production) == 0
    assert webhooks == []
    # then nothing new is lost: back in band, resolved where it paged
    _record(production, _now() + timedelta(minutes=1), lost)
    assert _alert(production) == 0
    assert [tier for tier, _ in webhooks] == [PAGE]
    assert "fct_subscription_revenue back in its band" in _text(webhooks[0][1])
    # the morning report: each incident with its chart, the band and the incident marked
    report = tmp_path / "report"
    assert _cli(production, "report", "--target", "prod", "--out", str(report)) == 0
    with open_page((report / "index.html").as_uri()) as page:
        figure = page.page.locator("#panel-incidents figure", has_text="fct_subscription_revenue")
        assert figure.count() == 1
        assert figure.get_attribute("data-status") == incidents.CLOSED
        assert figure.locator("polygon.band").count() == 1
        assert figure.locator('circle[data-incident="true"]').count() == 2
        assert figure.locator("rect.incident-span").bounding_box()["width"] > 0
        assert "no release since the previous refresh run" in figure.inner_text()
        assert page.errors == []
        page.screenshot("morning-report-incident.png")


def _before(project: Project, unique_id: str) -> int:
    """The relation's size at the refresh before the latest."""
    rows = history.read(
        resolve(project, "prod"),
        "select sizes.row_count from monitoring.relation_sizes as sizes inner join "
        "monitoring.runs as runs on runs.run_id = sizes.run_id where runs.job = 'refresh' "
        f"and sizes.unique_id = '{unique_id}' order by runs.started_at desc limit 2",
    )
    return int(rows[-1][0])
