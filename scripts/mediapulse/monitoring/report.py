"""`mediapulse report`: the morning report, one static HTML page over the run history.

No server, no CDN, no script: the page is HTML, CSS and inline SVG charts, so it opens from
a file or a downloaded artifact and shows the same thing everywhere. It reads the monitoring
views (models/monitoring/, built first when missing) and shows, as the team reads it every
morning: the last successful run per critical mart against its freshness target, the failing
tests of the latest runs, source freshness, model execution times, and the trends of execution
times and row counts with anomalies and schema changes highlighted. A failing test links to its
model's row, a model to its page in the docs site (dbt's static docs, published beside the
report as `docs.html`).
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
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


def read(reader: monitoring.Reader, target: str) -> ReportData:
    runs = reader.rows(
        f"select * from {{views}}.sli_runs order by started_at desc limit {RECENT_RUNS}"
    )
    latest_per_job = reader.rows(
        "select run_id from (select run_id, row_number() over (partition by job "
        "order by started_at desc) as recency from {views}.sli_runs) as ranked "
        "where recency = 1"
    )
    latest_ids = [r["run_id"] for r in latest_per_job]
    failing = []
    if latest_ids:
        marks = ", ".join([reader.marker] * len(latest_ids))
        failing = reader.rows(
            f"select * from {{views}}.sli_failing_tests where run_id in ({marks}) "
            "order by is_critical desc, node_status, test_name",
            latest_ids,
        )
    with_models = reader.rows(
        "select run_id from {views}.sli_model_execution_times where node_status = 'success' "
        "group by run_id order by max(run_started_at) desc limit 1"
    )
    model_times: list[dict[str, Any]] = []
    time_trends: dict[str, list[dict[str, Any]]] = {}
    if with_models:
        run_id = with_models[0]["run_id"]
        model_times = reader.rows(
            f"select * from {{views}}.sli_model_execution_times where run_id = {reader.marker} "
            "order by execution_time_s desc",
            [run_id],
        )
        job = model_times[0]["job"] if model_times else None
        for row in model_times[:TREND_MODELS]:
            time_trends[row["model_name"]] = reader.rows(
                "select run_id, run_started_at, execution_time_s as value, is_anomaly "
                f"from {{views}}.sli_model_execution_times where unique_id = {reader.marker} "
                f"and job = {reader.marker} order by run_started_at desc limit {RECENT_RUNS}",
                [row["unique_id"], job],
            )[::-1]
    row_trends: dict[str, list[dict[str, Any]]] = {}
    relations = reader.rows(
        "select distinct unique_id from {views}.sli_row_counts order by unique_id"
    )
    charted = [
        r["unique_id"] for r in relations
        if r["unique_id"].split(".")[-1] in TREND_RELATIONS
        or (r["unique_id"].startswith("source.")
            and r["unique_id"].split(".")[-1] in ("watch_events", "ad_impressions"))
    ]  # fmt: skip
    for uid in charted:
        row_trends[uid] = reader.rows(
            "select run_id, run_started_at, row_count as value, rows_added, is_anomaly "
            f"from {{views}}.sli_row_counts where unique_id = {reader.marker} "
            f"order by run_started_at desc limit {RECENT_RUNS}",
            [uid],
        )[::-1]
    anomalies = reader.rows(
        "select 'rows added' as metric, unique_id, job, run_started_at, rows_added as value, "
        "baseline_median_rows_added as baseline, anomaly_score from {views}.sli_row_counts "
        "where is_anomaly union all "
        "select 'execution time (s)', unique_id, job, run_started_at, execution_time_s, "
        "baseline_median_s, anomaly_score from {views}.sli_model_execution_times "
        "where is_anomaly order by run_started_at desc limit 50"
    )
    return ReportData(
        target=target,
        generated_at=datetime.now(UTC).replace(tzinfo=None),
        runs=runs,
        success_rates=reader.rows(
            "select * from {views}.sli_run_success_rate where week_start = "
            "(select max(week_start) from {views}.sli_run_success_rate) order by job"
        ),
        marts=reader.rows(
            "select * from {views}.sli_critical_mart_freshness order by meets_slo, model_name"
        ),
        failing_tests=failing,
        sources=reader.rows(
            "select * from {views}.sli_source_freshness where is_latest "
            "order by source_name, table_name"
        ),
        model_times=model_times,
        time_trends=time_trends,
        row_trends=row_trends,
        anomalies=anomalies,
        schema_changes=reader.rows(
            "select * from {views}.sli_schema_changes order by run_started_at desc limit 50"
        ),
    )


# -- rendering (pure) ---------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;
color:#1d2430} h1{font-size:22px;margin:8px 0}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;text-align:left;border-bottom:1px solid #eef;overflow-wrap:anywhere}
th{background:#f5f6fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #dde;border-radius:6px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:20px} .bad{color:#b3261e;font-weight:600} .ok{color:#1e7a34}
.warn{color:#a15c00;font-weight:600} tr.anomaly td{background:#fdecea} .muted{color:#667}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
figure{margin:0;border:1px solid #eef;padding:6px} figcaption{font-size:12px;color:#445}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and digits == 0:
        return f"{value:,}"
    return f"{float(value):,.{digits}f}"


def _share(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1%}"


def _cell(text: Any, css: str) -> str:
    return f'<td class="{css}">{_e(text)}</td>'


FRESHNESS_CLASS = {"pass": "ok", "warn": "warn", "error": "bad"}


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else _e(value)


def _name(unique_id: str | None) -> str:
    """A node's short name from its unique id: `fct_watch_sessions`, `dim_users.v2`,
    `streaming.watch_events` for a source."""
    return ".".join(unique_id.split(".")[2:]) if unique_id else ""


def _docs_link(unique_id: str | None, docs: str | None, text: str) -> str:
    if not unique_id or not docs:
        return _e(text)
    kind = unique_id.split(".")[0]
    return f'<a href="{_e(docs)}#!/{kind}/{_e(unique_id)}">{_e(text)}</a>'


def _table(headers: Sequence[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _chart(points: list[dict[str, Any]], unit: str) -> str:
    """An inline SVG line of ``points`` (oldest first), anomalies as red dots."""
    width, height, pad = 360, 120, 28
    values = [float(p["value"] or 0) for p in points]
    if not values:
        return '<p class="muted">no values yet</p>'
    top, bottom = max(values), min(0.0, min(values))
    span = (top - bottom) or 1.0
    step = (width - 2 * pad) / max(len(values) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + i * step, height - pad - (v - bottom) / span * (height - 2 * pad)

    coords = [xy(i, v) for i, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{4 if p["is_anomaly"] else 2}" '
        f'fill="{"#d93025" if p["is_anomaly"] else "#3367d6"}" '
        f'data-anomaly="{str(bool(p["is_anomaly"])).lower()}"><title>{_when(p["run_started_at"])}'
        f": {_num(p['value'], 2 if unit == 's' else 0)} {unit}</title></circle>"
        for (x, y), p in zip(coords, points, strict=True)
    )
    axis = (
        f'<text x="2" y="{pad - 8}" font-size="10">{_num(top, 2 if unit == "s" else 0)} {unit}'
        f'</text><line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#ccd"/>'
    )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f'{axis}<polyline points="{line}" fill="none" stroke="#3367d6" stroke-width="1.5"/>'
        f"{dots}</svg>"
    )


def render(data: ReportData, docs: str | None = DOCS_FILE) -> str:
    latest = data.runs[0] if data.runs else None
    stale = [m for m in data.marts if not m["meets_slo"]]
    failing = [t for t in data.failing_tests if t["node_status"] != "warn"]
    cards = [
        ("runs in history (shown)", _num(len(data.runs)), ""),
        ("stale critical marts", _num(len(stale)), "bad" if stale else "ok"),
        ("failing tests (latest runs)", _num(len(failing)), "bad" if failing else "ok"),
        (
            "warnings (latest runs)",
            _num(len(data.failing_tests) - len(failing)),
            "warn" if len(data.failing_tests) > len(failing) else "ok",
        ),
        ("anomalies (recent)", _num(len(data.anomalies)), "warn" if data.anomalies else "ok"),
        ("schema changes (recent)", _num(len(data.schema_changes)),
         "warn" if data.schema_changes else "ok"),
    ]  # fmt: skip
    keys = ("runs", "stale-marts", "failing-tests", "warnings", "anomalies", "schema-changes")
    card_html = "".join(
        f'<div class="card"><b class="{cls}" data-metric="{key}">{value}</b>{_e(label)}</div>'
        for key, (label, value, cls) in zip(keys, cards, strict=True)
    )
    rates = [
        f'<tr data-job="{_e(r["job"])}"><td>{_e(r["job"])}</td><td class="num">{r["runs"]}</td>'
        f'<td class="num">{r["failed_runs"]}</td>'
        f'<td class="num {"ok" if r["meets_slo"] else "bad"}">{float(r["success_rate"]):.1%}</td>'
        f'<td class="num">{float(r["success_rate_target"]):.0%}</td></tr>'
        for r in data.success_rates
    ]
    marts = [
        f'<tr data-model="{_e(m["model_name"])}">'
        f"<td>{_docs_link(m['unique_id'], docs, m['model_name'])}</td>"
        f"<td>{_e(m['owner'])}</td><td>{_when(m['last_built_at']) or 'never'}</td>"
        f'<td class="num">{_num(m["hours_since_last_build"], 1)}</td>'
        f'<td class="num">{_num(m["freshness_slo_hours"])}</td>'
        + (_cell("fresh", "ok") if m["meets_slo"] else _cell("STALE", "bad"))
        + "</tr>"
        for m in data.marts
    ]
    tests = [
        f'<tr data-test="{_e(t["test_name"])}"><td>{_e(t["test_name"])}</td>'
        f'<td class="{"warn" if t["node_status"] == "warn" else "bad"}">{_e(t["node_status"])}</td>'
        f'<td class="num">{_num(t["failures"])}</td>'
        f'<td><a href="#model-{_e(_name(t["tested_node"]))}">{_e(_name(t["tested_node"]))}</a> '
        f"({_docs_link(t['tested_node'], docs, 'docs')})</td>"
        f"<td>{_e(t['owner'])}</td><td>{_e(t['job'])}</td>"
        f"<td>{'critical' if t['is_critical'] else ''}</td></tr>"
        for t in data.failing_tests
    ]
    sources = [
        f"<tr><td>{_e(s['source_name'])}.{_e(s['table_name'])}</td>"
        + _cell(s["freshness_status"], FRESHNESS_CLASS.get(s["freshness_status"], "bad"))
        + f"<td>{_when(s['max_loaded_at'])}</td>"
        f'<td class="num">{_num(s["age_hours"], 1)}</td><td>{_when(s["snapshotted_at"])}</td></tr>'
        for s in data.sources
    ]
    models = [
        f'<tr id="model-{_e(_name(m["unique_id"]))}" '
        f'class="{"anomaly" if m["is_anomaly"] else ""}" '
        f'data-model="{_e(_name(m["unique_id"]))}">'
        f"<td>{_docs_link(m['unique_id'], docs, _name(m['unique_id']))}</td>"
        f"<td>{_e(m['owner'])}</td><td>{_e(m['node_status'])}</td>"
        f'<td class="num">{_num(m["execution_time_s"], 2)}</td>'
        f'<td class="num">{_num(m["baseline_median_s"], 2)}</td>'
        f'<td class="num">{_num(m["anomaly_score"], 1)}</td>'
        f"<td>{'ANOMALY' if m['is_anomaly'] else ''}</td></tr>"
        for m in data.model_times
    ]
    anomalies = [
        f'<tr class="anomaly"><td>{_e(a["metric"])}</td><td>{_e(_name(a["unique_id"]))}</td>'
        f"<td>{_e(a['job'])}</td><td>{_when(a['run_started_at'])}</td>"
        f'<td class="num">{_num(a["value"], 2)}</td><td class="num">{_num(a["baseline"], 2)}</td>'
        f'<td class="num">{_num(a["anomaly_score"], 1)}</td></tr>'
        for a in data.anomalies
    ]
    changes = [
        f'<tr class="{"anomaly" if c["severity"] == "error" else ""}"><td>{_e(c["source_name"])}.'
        f"{_e(c['table_name'])}</td><td>{_e(c['column_name'])}</td><td>{_e(c['change_kind'])}</td>"
        f"<td>{_e(c['declared_type'])}</td><td>{_e(c['actual_type'])}</td>"
        f"<td>{_e(c['renamed_from'])}</td><td>{_e(c['severity'])}</td>"
        f"<td>{_when(c['run_started_at'])}</td></tr>"
        for c in data.schema_changes
    ]
    runs = [
        f'<tr data-run="{_e(r["run_id"])}"><td>{_when(r["started_at"])}</td><td>{_e(r["job"])}</td>'
        f'<td class="{"ok" if r["is_successful"] else "bad"}">{_e(r["run_status"])}</td>'
        f'<td class="num">{_num(r["duration_s"], 1)}</td><td class="num">{r["tests_run"]}</td>'
        f'<td class="num">{r["tests_failed"]}</td>'
        f'<td class="num">{_share(r["test_pass_rate"])}</td>'
        f'<td class="num">{r["anomalies"]}</td><td>{_e(r["release_id"])}</td></tr>'
        for r in data.runs
    ]
    time_charts = "".join(
        f"<figure><figcaption>{_e(name)}: execution time per run</figcaption>"
        f"{_chart(points, 's')}</figure>"
        for name, points in data.time_trends.items()
    )
    row_charts = "".join(
        f"<figure><figcaption>{_e(_name(uid))}: rows after each run</figcaption>"
        f"{_chart(points, 'rows')}</figure>"
        for uid, points in data.row_trends.items()
    )
    latest_line = (
        f"latest run: {_e(latest['job'])} {_e(latest['run_status'])} "
        f"at {_when(latest['started_at'])}"
        if latest
        else "no runs recorded yet"
    )
    sections = [
        ("panel-summary", "Service levels this week",
         _table(["job", "runs", "failed", "success rate", "target"], rates,
                "no runs this week")),
        ("panel-critical-marts", "Last successful run per critical mart",
         _table(["mart", "owner", "last successful build", "hours since", "target (h)", ""],
                marts, "no critical marts")),
        ("panel-failing-tests", "Failing tests (latest run of each job)",
         _table(["test", "status", "failures", "tests", "owner", "job", ""], tests,
                "no test failed or warned in the latest runs")),
        ("panel-source-freshness", "Source freshness (latest check)",
         _table(["source", "status", "newest load", "age (h)", "checked"], sources,
                "no freshness check recorded yet (the nightly checks)")),
        ("panel-execution-times", "Model execution times (latest run that built models)",
         _table(["model", "owner", "status", "seconds", "baseline median", "score", ""], models,
                "no model built yet")),
        ("panel-time-trends", "Execution time trends (same job, slowest models)",
         f'<div class="charts">{time_charts}</div>'),
        ("panel-row-trends", "Row-count trends",
         f'<div class="charts">{row_charts}</div>'),
        ("panel-anomalies", "Anomalies",
         _table(["metric", "relation", "job", "run", "value", "baseline median", "score"],
                anomalies, "no anomaly flagged")),
        ("panel-schema-changes", "Schema changes",
         _table(["table", "column", "change", "declared", "actual", "renamed from", "severity",
                 "run"], changes, "no schema change found")),
        ("panel-runs", "Recent runs",
         _table(["started", "job", "status", "seconds", "tests", "failed", "pass rate",
                 "anomalies", "release"], runs, "no runs recorded yet")),
    ]  # fmt: skip
    body = "".join(
        f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>'
        for sid, title, content in sections
    )
    docs_line = f' · <a href="{_e(docs)}">docs site</a>' if docs else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>MediaPulse morning report: {_e(data.target)}</title>"
        f'<meta name="viewport" content="width=device-width"><style>{CSS}</style></head><body>'
        f"<h1>MediaPulse morning report: target {_e(data.target)}</h1>"
        f'<p class="muted">generated {_when(data.generated_at)} UTC · {latest_line}{docs_line}</p>'
        f'<div class="cards">{card_html}</div>{body}</body></html>\n'
    )


def summary_markdown(data: ReportData) -> str:
    """The report's headline for the job summary (GitHub shows Markdown, not HTML)."""
    stale = [m["model_name"] for m in data.marts if not m["meets_slo"]]
    failing = [t for t in data.failing_tests if t["node_status"] != "warn"]
    lines = [
        f"## Morning report: `{data.target}`",
        "",
        f"- critical marts past their freshness target: {len(stale)}"
        + (f" ({', '.join(stale)})" if stale else ""),
        f"- failing tests in the latest runs: {len(failing)}, warnings: "
        f"{len(data.failing_tests) - len(failing)}",
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
    project: Project,
    target: str,
    out_dir: Path,
    artifacts_dir: Path | None = None,
    rebuild: bool = False,
) -> tuple[Path, list[str], ReportData]:
    """Build the monitoring views if missing (or ``rebuild``), read them, write
    ``out_dir``/index.html and, from ``artifacts_dir`` (a job's published state) or the
    target directory, dbt's static docs site as ``out_dir``/docs.html. Returns the page, the
    report's lines and what it showed."""
    lines: list[str] = []
    built = False
    if not rebuild:
        try:
            with monitoring.reader(project, target) as reader:
                built = reader.built
        except MediaPulseError:
            built = False  # no history yet: building the views creates its tables
    if not built:
        ok, line = monitoring.build(project, target)
        lines.append(line)
        if not ok:
            raise MediaPulseError(line.removeprefix("notice: "))
    with monitoring.reader(project, target) as reader:
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
