"""Monitoring from the user's side: production jobs run for days, the run history and the SLI
views over it tell what happened, anomalies injected through the generator are flagged (and
a normal day is not), and the morning report shows it in a real browser.

One production (module fixture): a deploy, then one hourly refresh per appended day, eight
normal days (after the first, a week of values to judge by: module anomalies' MIN_WEEK), a
day whose watch events the loader delivered ten times, a day whose events were lost, and a
normal day again. The data set ends days in the past, so that every appended day
is still a load of the past (the `not_in_future` tests allow two days ahead).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mediapulse.cli.main import main
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import deps
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history, report
from mediapulse.monitoring import views as monitoring
from mediapulse.release.execute import run_deploy, run_refresh

from ..conftest import clone_built, copy_project
from ..support.browser import open_page

pytestmark = pytest.mark.dbt

# watch events delivered per appended day: 1 normal, 10 duplicated by the loader, 0 lost
DAYS = [1, 1, 1, 1, 1, 1, 1, 1, 10, 0, 1]
TENFOLD, EMPTY, AFTER = 8, 9, 10
WATCH_EVENTS = "source.mediapulse.streaming.watch_events"
SESSIONS = "model.mediapulse.fct_watch_sessions"


@dataclass
class Production:
    project: Project
    state: Path
    refreshes: list[str]  # run ids, one per appended day


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Production:
    project = copy_project(tmp_path_factory.mktemp("monitoring") / "project")
    deps.install(project)
    days = 6
    params = generate.Params(
        seed=11, users=150, days=days, events_per_user_day=12.0,
        start_date=generate.default_start_date(days + len(DAYS) - 1),
    )  # fmt: skip
    generate.generate(project.raw_path, params)
    state = project.root / "state"
    assert run_deploy(resolve(project, "prod"), state, None) == 0
    refreshes = []
    for copies in DAYS:
        generate.append_day(project.raw_path, event_copies=copies)
        assert run_refresh(resolve(project, "prod"), state, None) == 0, (
            f"refresh of a {copies}x day"
        )
        [(run_id,)] = history.read(
            resolve(project, "prod"),
            "select run_id from monitoring.runs where job = 'refresh' order by started_at desc "
            "limit 1",
        )  # fmt: skip
        refreshes.append(run_id)
    return Production(project, state, refreshes)


def _judged(production: Production, unique_id: str, metric: str = "rows_added") -> list[tuple]:
    """(value, baseline_n, median, is_anomaly) of each refresh, from the history table."""
    rows = dict(
        (run_id, rest)
        for run_id, *rest in history.read(
            resolve(production.project, "prod"),
            "select run_id, value, baseline_n, baseline_median, is_anomaly "
            f"from monitoring.anomalies where unique_id = '{unique_id}' and metric = '{metric}'",
        )
    )  # fmt: skip
    return [tuple(rows[r]) if r in rows else None for r in production.refreshes]


def test_the_loaders_tenfold_and_lost_days_are_flagged_and_normal_days_are_not(
    production: Production,
) -> None:
    judged = _judged(production, WATCH_EVENTS)
    # the first refresh has no earlier refresh to count from; the next seven build the baseline
    # (not judged before a week of values: baseline 0)
    assert judged[0] is None
    assert [j[1] for j in judged[1:TENFOLD]] == [0] * 7
    assert not any(j[3] for j in judged[1:TENFOLD]), "a normal day is never flagged"
    normal = [j[0] for j in judged[1:TENFOLD]]
    value, baseline_n, median, flagged = judged[TENFOLD]
    assert flagged and value > 5 * median, "ten deliveries of each event: a spike"
    value, baseline_n, median, flagged = judged[EMPTY]
    assert flagged and value == 0, "a day without events: a drop to zero"
    # neither anomaly entered a later baseline: the normal day after them is judged against
    # the seven normal days only, and is not flagged
    value, baseline_n, median, flagged = judged[AFTER]
    assert not flagged and baseline_n == 7
    assert median == statistics.median(normal)


def test_duplicates_are_flagged_where_they_are_not_downstream_of_the_deduplication(
    production: Production,
) -> None:
    sessions = _judged(production, SESSIONS)
    assert not sessions[TENFOLD][3], "staging keeps the first copy: the sessions are as usual"
    assert sessions[EMPTY][3] and sessions[EMPTY][0] == 0, "a lost day has no sessions either"


def test_the_sli_views_agree_with_the_history(production: Production) -> None:
    project = production.project
    with monitoring.reader(resolve(project, "prod")) as reader:
        runs = reader.rows("select * from {views}.sli_runs order by started_at")
        weekly = reader.rows("select * from {views}.sli_run_success_rate")
        rows = reader.rows(
            "select run_id, is_anomaly from {views}.sli_row_counts where unique_id = "
            f"'{WATCH_EVENTS}'"
        )
        marts = reader.rows("select * from {views}.sli_critical_mart_freshness")
    recorded = history.read(resolve(project, "prod"), "select job, status from monitoring.runs")
    assert len(runs) == len(recorded) == 1 + len(DAYS)
    assert {(r["job"], r["run_status"]) for r in runs} == set(recorded)
    assert sum(w["runs"] for w in weekly) == len(recorded)
    assert all(r["test_pass_rate"] == 1.0 and r["meets_test_pass_slo"] for r in runs
               if r["job"] == "refresh")  # fmt: skip
    flagged = {r["run_id"] for r in rows if r["is_anomaly"]}
    assert flagged == {production.refreshes[TENFOLD], production.refreshes[EMPTY]}
    # every critical mart was built by the deploy or a refresh minutes ago
    assert marts and all(m["meets_slo"] for m in marts)


def test_a_model_whose_time_triples_is_flagged(built: Project, tmp_path: Path) -> None:
    """A developer's change makes a model three times slower: the build after it says so,
    the builds before it (same time each) did not."""
    project = clone_built(built, tmp_path / "project")
    model = project.root / "models/marts/ads/fct_campaign_delivery.sql"
    original = model.read_text()

    def build_taking(ms: int) -> str:
        # a model whose owners care about seconds (the default minimum is 30 s: issue 30)
        meta = '{"mediapulse": {"anomalies": {"min_seconds": 1}}}'
        model.write_text(
            f'{{{{ config(pre_hook="select sleep_ms({ms})", meta={meta}) }}}}\n' + original
        )
        where = ["--project-dir", str(project.root)]
        assert main([*where, "build", "--select", "fct_campaign_delivery"]) == 0
        [(run_id,)] = history.read(
            resolve(project, "dev"),
            "select run_id from monitoring.runs order by started_at desc limit 1",
        )
        return run_id

    runs = [build_taking(1000) for _ in range(5)] + [build_taking(3000)]
    judged = dict(
        (run_id, (baseline_n, flagged))
        for run_id, baseline_n, flagged in history.read(
            resolve(project, "dev"),
            "select run_id, baseline_n, is_anomaly from monitoring.anomalies where metric = "
            "'execution_time_s' and unique_id = 'model.mediapulse.fct_campaign_delivery'",
        )
    )  # fmt: skip
    # the first build of the project (the fixture's) and the slow ones before are the baseline
    assert judged[runs[4]] == (5, False), "the same time again is not flagged"
    assert judged[runs[5]] == (6, True), "three times the time is"


def test_the_morning_report_shows_the_history_in_a_browser(
    production: Production, tmp_path: Path
) -> None:
    project = production.project
    out = tmp_path / "report"
    summary = tmp_path / "summary.md"
    assert main(["--project-dir", str(project.root), "report", "--target", "prod", "--out",
                 str(out), "--artifacts", str(production.state), "--summary",
                 str(summary)]) == 0  # fmt: skip
    assert (out / "docs.html").is_file(), "dbt's static docs beside the report"
    assert "## Morning report: `prod`" in summary.read_text()

    anomalies = history.read(resolve(project, "prod"), "select count(*) from monitoring.anomalies "
                             "where is_anomaly")[0][0]  # fmt: skip
    runs = history.read(resolve(project, "prod"), "select count(*) from monitoring.runs")[0][0]
    latest = (
        "(select run_id from (select run_id, row_number() over (partition by job order "
        "by started_at desc) as n from monitoring.runs) as r where n = 1)"
    )
    failing, warned = history.read(
        resolve(project, "prod"),
        "select count(*) filter (where status in ('fail', 'error', 'runtime error')), "
        "count(*) filter (where status = 'warn') from monitoring.node_results where "
        f"resource_type in ('test', 'unit_test') and run_id in {latest}",
    )[0]  # fmt: skip
    with open_page((out / "index.html").as_uri()) as page:
        for panel in ("critical-marts", "failing-tests", "source-freshness", "execution-times",
                      "time-trends", "row-trends", "anomalies", "schema-changes"):  # fmt: skip
            assert page.page.locator(f"#panel-{panel} h2").count() == 1, panel
        metric = page.page.locator
        assert metric('[data-metric="anomalies"]').inner_text() == str(anomalies)
        assert metric('[data-metric="failing-tests"]').inner_text() == str(failing)
        assert metric('[data-metric="warnings"]').inner_text() == str(warned)
        assert metric("#panel-runs tbody tr").count() == runs
        assert metric("#panel-anomalies tbody tr.anomaly").count() == anomalies
        # the row-count chart of the raw events marks the two anomalous days
        chart = metric("#panel-row-trends figure", has_text="streaming.watch_events")
        assert chart.locator('circle[data-anomaly="true"]').count() == 2
        # a model links to its page in the docs site
        link = metric("#panel-critical-marts a", has_text="fct_watch_sessions")
        assert link.first.get_attribute("href") == (
            "docs.html#!/model/model.mediapulse.fct_watch_sessions"
        )
        assert page.errors == [], "no console errors"
        assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
        page.screenshot("morning-report.png")


INJECTED = "<i>x</i><script>alert(1)</script> & \"q\" 'a'"
INJECTED_ID = f"model.mediapulse.{INJECTED}"


class _Row(dict):
    """A view's row whose every text column holds INJECTED."""

    def __missing__(self, key: str) -> str:
        return INJECTED


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text += data


def test_the_morning_report_escapes_every_value() -> None:
    """Names, owners and dbt's messages are data: on the page they are text, never markup
    (the template escapes every value; no dbt run needed)."""
    numbers = dict(
        runs=1, failed_runs=0, success_rate=1.0, success_rate_target=0.95, meets_slo=False,
        hours_since_last_build=2.0, freshness_slo_hours=24, failures=3, is_critical=True,
        age_hours=1.0, execution_time_s=1.5, baseline_median_s=1.0, anomaly_score=4.0,
        is_anomaly=True, value=10, baseline=5, duration_s=9.0, tests_run=4, tests_failed=1,
        test_pass_rate=0.75, anomalies=1, is_successful=False,
    )  # fmt: skip
    row = _Row(numbers, unique_id=INJECTED_ID, tested_node=INJECTED_ID)
    data = report.ReportData(
        target=INJECTED, generated_at=datetime(2024, 5, 6, 7, 8), runs=[row],
        success_rates=[row], marts=[row], failing_tests=[row], sources=[row], model_times=[row],
        time_trends={INJECTED: [row]}, row_trends={INJECTED_ID: [row]}, anomalies=[row],
        schema_changes=[row],
    )  # fmt: skip
    page = _Page()
    page.feed(report.render(data, report.DOCS_FILE))
    tags = [tag for tag, _ in page.elements]
    assert "i" not in tags and "script" not in tags, "a value became markup"
    assert page.text.count(INJECTED) >= 30, "every value shows as its text"
    attributes = {value for _, attrs in page.elements for value in attrs.values()}
    assert INJECTED in attributes, "attributes hold the value whole (quotes escaped)"
    assert f"docs.html#!/model/{INJECTED_ID}" in attributes


# dbt-docs' own template errors: an icon's `{{ getIcon(...) }}` placeholder is requested before
# Angular fills it in, and the favicon's `${require(...)}` never is; a page opened from a file
# logs them as an unsafe or missing URL. Nothing else may fail.
DOCS_TEMPLATE_URLS = ("%7B%7B%20getIcon(", "$%7Brequire(")
DOCS_TEMPLATE_ERRORS = ("Unsafe attempt to load URL", "Failed to load resource")


def test_the_static_docs_site_renders_its_lineage_graph_from_a_file(
    production: Production, tmp_path: Path
) -> None:
    docs = production.state / "static_index.html"
    assert docs.is_file(), "the nightly and deploy publish dbt's docs as one static file"
    with open_page(docs.as_uri() + "#!/overview?g_v=1", width=1400) as page:
        page.page.wait_for_function(
            "() => { const c = document.getElementById('cy');"
            " return c && c._cyreg && c._cyreg.cy && c._cyreg.cy.nodes().length > 0 }",
            timeout=30_000,
        )
        nodes = page.page.evaluate(
            "document.getElementById('cy')._cyreg.cy.nodes().map(n => n.id())"
        )
        edges = page.page.evaluate("document.getElementById('cy')._cyreg.cy.edges().length")
        assert SESSIONS in nodes and "model.mediapulse.revenue_by_content" in nodes
        assert edges > len(nodes) / 2
        assert [u for u in page.failed if not any(t in u for t in DOCS_TEMPLATE_URLS)] == []
        assert [e for e in page.errors if not e.startswith(DOCS_TEMPLATE_ERRORS)] == []
        assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
        page.screenshot("docs-lineage.png")
