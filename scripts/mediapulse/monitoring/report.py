"""`mediapulse report`: the morning report, one static HTML page over the run history.

No server, no CDN, no script: the page is HTML, CSS and inline SVG charts, so it opens from
a file or a downloaded artifact and shows the same thing everywhere. Its markup is the Jinja
template templates/report.html.j2 (shipped as package data); this module reads the data and
prepares what the template shows. It reads the monitoring
views (models/monitoring/, built first when missing) and shows, as the team reads it every
morning: the last successful run per critical mart against its freshness target, the failing
tests of the latest runs, source freshness, model execution times, and the trends of execution
times and row counts with anomalies and schema changes highlighted. A failing test links to its
model's row, a model to its page in the docs site (dbt's static docs, published beside the
report as `docs.html`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from mediapulse.core.errors import MediaPulseError
from mediapulse.engines.base import Engine
from mediapulse.monitoring import anomalies as verdicts
from mediapulse.monitoring import incidents as incident_log
from mediapulse.monitoring import ledger
from mediapulse.monitoring import views as monitoring

DOCS_FILE = "docs.html"  # dbt's static docs site, beside the report
STATIC_DOCS = "static_index.html"  # what `dbt docs generate --static` writes
RECENT_RUNS = 30  # runs the trend charts and the runs table show
TREND_MODELS = 6  # slowest models charted
TREND_RELATIONS = ("fct_watch_sessions", "fct_ad_impressions", "fct_daily_engagement")


@dataclass
class ReportData:
    """What the page shows, read from the monitoring views (pure data: the renderer reads
    nothing else)."""

    target: str
    generated_at: datetime
    runs: list[dict[str, Any]]  # newest first
    success_rates: list[dict[str, Any]]  # this week's, per job
    marts: list[dict[str, Any]]
    failing_tests: list[dict[str, Any]]  # of the latest run of each job
    sources: list[dict[str, Any]]
    model_times: list[dict[str, Any]]  # of the latest run that built models
    time_trends: dict[str, list[dict[str, Any]]]
    row_trends: dict[str, list[dict[str, Any]]]
    anomalies: list[dict[str, Any]]
    schema_changes: list[dict[str, Any]]
    # open incidents and those resolved in the last day, each with its series' points
    incidents: list[dict[str, Any]] = field(default_factory=list)


def read(reader: monitoring.Reader, target: str) -> ReportData:
    model_times, time_trends = _model_times(reader)
    now = datetime.now(UTC).replace(tzinfo=None)
    return ReportData(
        target=target,
        generated_at=now,
        incidents=_incidents(reader, target, now),
        runs=reader.rows(
            f"select * from {{views}}.sli_runs order by started_at desc limit {RECENT_RUNS}"
        ),
        success_rates=reader.rows(
            "select * from {views}.sli_run_success_rate where week_start = "
            "(select max(week_start) from {views}.sli_run_success_rate) order by job"
        ),
        marts=reader.rows(
            "select * from {views}.sli_critical_mart_freshness order by meets_slo, model_name"
        ),
        failing_tests=_failing_tests(reader),
        sources=reader.rows(
            "select * from {views}.sli_source_freshness where is_latest "
            "order by source_name, table_name"
        ),
        model_times=model_times,
        time_trends=time_trends,
        row_trends=_row_trends(reader),
        anomalies=reader.rows(
            "select 'rows added' as metric, unique_id, job, run_started_at, rows_added as value, "
            "baseline_median_rows_added as baseline, anomaly_score from {views}.sli_row_counts "
            "where is_anomaly union all "
            "select 'execution time (s)', unique_id, job, run_started_at, execution_time_s, "
            "baseline_median_s, anomaly_score from {views}.sli_model_execution_times "
            "where is_anomaly order by run_started_at desc limit 50"
        ),
        schema_changes=reader.rows(
            "select * from {views}.sli_schema_changes order by run_started_at desc limit 50"
        ),
    )


def _incidents(reader: monitoring.Reader, target: str, now: datetime) -> list[dict[str, Any]]:
    """The incidents of the last day (module incidents), each with the last RECENT_RUNS values
    of its series in its job's runs, oldest first."""
    found = []
    for incident in incident_log.recent(reader, target, now):
        points = ledger.rows(
            reader,
            "select runs.run_id, runs.started_at as run_started_at, judged.value, "
            "judged.baseline_median, judged.score, judged.is_anomaly, judged.status "
            "from {history}.anomalies as judged inner join {history}.runs as runs "
            f"on runs.run_id = judged.run_id where judged.unique_id = {reader.marker} "
            f"and judged.metric = {reader.marker} and judged.job = {reader.marker} "
            f"order by runs.started_at desc limit {RECENT_RUNS}",
            [incident.unique_id, incident.metric, incident.job],
        )[::-1]
        found.append({**incident.__dict__, "points": points})
    return found


def _failing_tests(reader: monitoring.Reader) -> list[dict[str, Any]]:
    """The failing and warning tests of the latest run of each job."""
    latest_per_job = reader.rows(
        "select run_id from (select run_id, row_number() over (partition by job "
        "order by started_at desc) as recency from {views}.sli_runs) as ranked "
        "where recency = 1"
    )
    latest_ids = [r["run_id"] for r in latest_per_job]
    if not latest_ids:
        return []
    marks = ", ".join([reader.marker] * len(latest_ids))
    return reader.rows(
        f"select * from {{views}}.sli_failing_tests where run_id in ({marks}) "
        "order by is_critical desc, node_status, test_name",
        latest_ids,
    )


def _model_times(
    reader: monitoring.Reader,
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The models of the latest run that built any, slowest first, and the time trends of the
    slowest TREND_MODELS in runs of that same job (another job's times are not comparable)."""
    with_models = reader.rows(
        "select run_id from {views}.sli_model_execution_times where node_status = 'success' "
        "group by run_id order by max(run_started_at) desc limit 1"
    )
    if not with_models:
        return [], {}
    model_times = reader.rows(
        f"select * from {{views}}.sli_model_execution_times where run_id = {reader.marker} "
        "order by execution_time_s desc",
        [with_models[0]["run_id"]],
    )
    job = model_times[0]["job"] if model_times else None
    time_trends = {
        row["model_name"]: reader.rows(
            "select run_id, run_started_at, execution_time_s as value, is_anomaly "
            f"from {{views}}.sli_model_execution_times where unique_id = {reader.marker} "
            f"and job = {reader.marker} order by run_started_at desc limit {RECENT_RUNS}",
            [row["unique_id"], job],
        )[::-1]  # oldest first, as charted
        for row in model_times[:TREND_MODELS]
    }
    return model_times, time_trends


def _row_trends(reader: monitoring.Reader) -> dict[str, list[dict[str, Any]]]:
    """Rows after each run of the charted relations: TREND_RELATIONS and the raw events."""
    relations = reader.rows(
        "select distinct unique_id from {views}.sli_row_counts order by unique_id"
    )
    charted = [
        r["unique_id"] for r in relations
        if r["unique_id"].split(".")[-1] in TREND_RELATIONS
        or (r["unique_id"].startswith("source.")
            and r["unique_id"].split(".")[-1] in ("watch_events", "ad_impressions"))
    ]  # fmt: skip
    return {
        uid: reader.rows(
            "select run_id, run_started_at, row_count as value, rows_added, is_anomaly "
            f"from {{views}}.sli_row_counts where unique_id = {reader.marker} "
            f"order by run_started_at desc limit {RECENT_RUNS}",
            [uid],
        )[::-1]  # oldest first, as charted
        for uid in charted
    }


# -- rendering (pure) ---------------------------------------------------------------------------
# The page is templates/report.html.j2; this prepares what it shows and formats values.

TEMPLATES = Path(__file__).with_name("templates")
TEMPLATE = "report.html.j2"
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 360, 120, 28


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and digits == 0:
        return f"{value:,}"
    return f"{float(value):,.{digits}f}"


def _share(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{float(value):.{digits}%}"


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return "" if value is None else str(value)


def _name(unique_id: str | None) -> str:
    """A node's short name from its unique id: `fct_watch_sessions`, `dim_users.v2`,
    `streaming.watch_events` for a source."""
    return ".".join(unique_id.split(".")[2:]) if unique_id else ""


def _blank_none(value: Any) -> Any:
    return "" if value is None else value  # a missing value shows as nothing, not "None"


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        # every value on the page is data (names, owners, dbt's messages): escaped, always
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelled field fails, never renders blank
        finalize=_blank_none,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(num=_num, share=_share, when=_when, name=_name)
    return environment


@dataclass(frozen=True)
class Dot:
    x: str
    y: str
    anomaly: bool
    title: str  # when, and the value with its unit


@dataclass(frozen=True)
class Chart:
    """An SVG line of a metric per run, anomalies as red dots: coordinates, no markup."""

    line: str  # the polyline's points, oldest first
    dots: list[Dot]
    top: str  # the highest value, labelled on the axis
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    pad: int = CHART_PAD


def _chart(points: list[dict[str, Any]], unit: str) -> Chart | None:
    """``points`` (oldest first) as a chart; None when there is no value to draw."""
    values = [float(p["value"] or 0) for p in points]
    if not values:
        return None
    digits = 2 if unit == "s" else 0
    top, bottom = max(values), min(0.0, min(values))
    span = (top - bottom) or 1.0
    step = (CHART_WIDTH - 2 * CHART_PAD) / max(len(values) - 1, 1)
    coords = [
        (CHART_PAD + i * step,
         CHART_HEIGHT - CHART_PAD - (v - bottom) / span * (CHART_HEIGHT - 2 * CHART_PAD))
        for i, v in enumerate(values)
    ]  # fmt: skip
    dots = [
        Dot(f"{x:.1f}", f"{y:.1f}", bool(p["is_anomaly"]),
            f"{_when(p['run_started_at'])}: {_num(p['value'], digits)} {unit}")
        for (x, y), p in zip(coords, points, strict=True)
    ]  # fmt: skip
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    return Chart(line, dots, _num(top, digits))


@dataclass(frozen=True)
class IncidentChart:
    """An incident's series: its values, the band its baseline allowed (median ± threshold *
    spread, per run) and the incident's runs marked."""

    line: str
    band: str  # the band's polygon: upper edge left to right, lower edge back
    dots: list[Dot]  # anomaly: the run is in the incident
    span: tuple[str, str]  # x from, x to: the incident's runs
    top: str
    bottom: str
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    pad: int = CHART_PAD


def _band(point: dict[str, Any], metric: str) -> tuple[float, float] | None:
    """(low, high) the value had to stay within: the spread is the one its score was measured
    in ((value - median) / score); a value on its median gets the metric's floor."""
    median, score, value = point.get("baseline_median"), point.get("score"), point.get("value")
    if median is None or score is None or value is None:
        return None
    median, score, value = float(median), float(score), float(value)
    threshold = float(getattr(verdicts, "THRESHOLD", 3.5))
    if score:
        spread = abs((value - median) / score)
    else:
        rule = getattr(verdicts, "METRICS", {}).get(metric)
        spread = max(rule.relative_floor * abs(median), rule.absolute_floor) if rule else 0.0
    return median - threshold * spread, median + threshold * spread


def _incident_chart(incident: dict[str, Any]) -> IncidentChart | None:
    points = incident["points"]
    if not points:
        return None
    unit = "rows" if incident["metric"] == "rows_added" else "s"
    bands = [_band(p, incident["metric"]) for p in points]
    values = [float(p["value"]) for p in points]
    edges = [e for b in bands if b for e in b]
    top, bottom = max(values + edges), min(values + edges)
    span = (top - bottom) or 1.0
    step = (CHART_WIDTH - 2 * CHART_PAD) / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return CHART_PAD + i * step

    def y(v: float) -> float:
        return CHART_HEIGHT - CHART_PAD - (v - bottom) / span * (CHART_HEIGHT - 2 * CHART_PAD)

    # the anomalous runs: from the one that opened it to the last before the one that resolved it
    resolved, opened = incident.get("resolved_at"), incident["opened_at"]
    inside = [
        opened <= p["run_started_at"] < resolved if resolved
        else opened <= p["run_started_at"] <= incident["last_at"]
        for p in points
    ]  # fmt: skip
    digits = 0 if unit == "rows" else 2
    dots = [
        Dot(f"{x(i):.1f}", f"{y(v):.1f}", inside[i],
            f"{_when(p['run_started_at'])}: {_num(v, digits)} {unit}"
            + (f", score {_num(p['score'], 1)}" if p.get("score") is not None else "")
            + (f" ({p['status']})" if p.get("status") not in (None, "normal") else ""))
        for i, (v, p) in enumerate(zip(values, points, strict=True))
    ]  # fmt: skip
    upper = [f"{x(i):.1f},{y(b[1]):.1f}" for i, b in enumerate(bands) if b]
    lower = [f"{x(i):.1f},{y(b[0]):.1f}" for i, b in enumerate(bands) if b][::-1]
    marked = [i for i, flag in enumerate(inside) if flag] or [len(points) - 1]
    half = step / 2 if len(points) > 1 else 6.0
    return IncidentChart(
        " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values)),
        " ".join(upper + lower),
        dots,
        (f"{x(marked[0]) - half:.1f}", f"{x(marked[-1]) - x(marked[0]) + 2 * half:.1f}"),
        f"{_num(top, digits)} {unit}",
        f"{_num(bottom, digits)} {unit}",
    )


def _failing(data: ReportData) -> list[dict[str, Any]]:
    """The latest runs' tests that failed (the rest of failing_tests warned)."""
    return [t for t in data.failing_tests if t["node_status"] != "warn"]


def _cards(data: ReportData) -> list[dict[str, str]]:
    """The headline numbers: (key for data-metric, label, value, css class)."""
    stale = [m for m in data.marts if not m["meets_slo"]]
    failing = len(_failing(data))
    warned = len(data.failing_tests) - failing
    opened = [i for i in data.incidents if i["status"] == incident_log.OPEN]
    cards = [
        ("runs", "runs in history (shown)", len(data.runs), ""),
        ("stale-marts", "stale critical marts", len(stale), "bad" if stale else "ok"),
        ("failing-tests", "failing tests (latest runs)", failing, "bad" if failing else "ok"),
        ("warnings", "warnings (latest runs)", warned, "warn" if warned else "ok"),
        ("incidents", "open incidents", len(opened), "bad" if opened else "ok"),
        ("anomalies", "anomalies (recent)", len(data.anomalies),
         "warn" if data.anomalies else "ok"),
        ("schema-changes", "schema changes (recent)", len(data.schema_changes),
         "warn" if data.schema_changes else "ok"),
    ]  # fmt: skip
    return [
        {"key": key, "label": label, "value": _num(count), "css": css}
        for key, label, count, css in cards
    ]


def render(data: ReportData, docs: str | None = DOCS_FILE) -> str:
    """The page: ``data`` through the template; ``docs``: the docs site's file, if any."""
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            data=data,
            docs=docs,
            latest=data.runs[0] if data.runs else None,
            cards=_cards(data),
            time_charts=[(name, _chart(p, "s")) for name, p in data.time_trends.items()],
            row_charts=[(uid, _chart(p, "rows")) for uid, p in data.row_trends.items()],
            incident_charts=[(i, _incident_chart(i)) for i in data.incidents],
        )
    )


def summary_markdown(data: ReportData) -> str:
    """The report's headline for the job summary (GitHub shows Markdown, not HTML)."""
    stale = [m["model_name"] for m in data.marts if not m["meets_slo"]]
    failing = _failing(data)
    lines = [
        f"## Morning report: `{data.target}`",
        "",
        f"- critical marts past their freshness target: {len(stale)}"
        + (f" ({', '.join(stale)})" if stale else ""),
        f"- failing tests in the latest runs: {len(failing)}, warnings: "
        f"{len(data.failing_tests) - len(failing)}",
        f"- incidents open: {sum(i['status'] == incident_log.OPEN for i in data.incidents)}, "
        f"resolved in the last day: "
        f"{sum(i['status'] == incident_log.CLOSED for i in data.incidents)}",
        f"- anomalies flagged (recent): {len(data.anomalies)}",
        f"- schema changes found (recent): {len(data.schema_changes)}",
    ]
    for rate in data.success_rates:
        lines.append(
            f"- {rate['job']}: {float(rate['success_rate']):.1%} of {rate['runs']} runs "
            f"succeeded this week (target {float(rate['success_rate_target']):.0%})"
        )
    return "\n".join(lines) + "\n"


def write(
    engine: Engine,
    out_dir: Path,
    artifacts_dir: Path | None = None,
    rebuild: bool = False,
) -> tuple[Path, list[str], ReportData]:
    """Build the monitoring views if missing (or ``rebuild``), read them, write
    ``out_dir``/index.html and, from ``artifacts_dir`` (a job's published state) or the
    target directory, dbt's static docs site as ``out_dir``/docs.html. Returns the page, the
    report's lines and what it showed."""
    project, target = engine.project, engine.target
    lines: list[str] = []
    built = False
    if not rebuild:
        try:
            with monitoring.reader(engine) as reader:
                built = reader.built
        except MediaPulseError:
            built = False  # no history yet: building the views creates its tables
    if not built:
        ok, line = monitoring.build(engine)
        lines.append(line)
        if not ok:
            raise MediaPulseError(line.removeprefix("notice: "))
    with monitoring.reader(engine) as reader:
        data = read(reader, target)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs = None
    for folder in (artifacts_dir, project.target_dir):
        if folder is not None and (folder / STATIC_DOCS).is_file():
            shutil.copy2(folder / STATIC_DOCS, out_dir / DOCS_FILE)
            docs = DOCS_FILE
            lines.append(f"docs site: {out_dir / DOCS_FILE} (from {folder / STATIC_DOCS})")
            break
    page = out_dir / "index.html"
    page.write_text(render(data, docs))
    lines.append(f"morning report: {page}")
    return page, lines, data
