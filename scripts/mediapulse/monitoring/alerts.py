"""`mediapulse alert`: one message per failed or degraded run, a page or a ticket, addressed to
the owners of what broke.

A run's problems come from the monitoring views over the run history (models/monitoring/),
never from dbt's logs, so a run with 200 failing tests is one message that counts them, not
200 messages. Two tiers:

- **page** (someone acts now): a production release that failed (nightly, deploy, refresh:
  production stays on the release before it), an error or failing test on anything tagged
  `critical`, a critical mart older than its freshness SLO (`meta.slo` in dbt_project.yml),
  a schema change that stops the job (on a critical source), and a row-count anomaly on a
  critical model or source: a lost load or a doubled day passes every test and is wrong data
  in what the business reads.
- **ticket** (someone looks today): warnings, failures of non-critical tests and nodes, a
  failed developer build, schema changes that only warn, stale sources, row-count anomalies
  elsewhere, and slow models (an execution-time anomaly never pages: slow is not wrong).

Every item goes to the owner of its model's group (models/_groups.yml); what has no group
(sources, seeds, staging, the run itself) goes to the platform's owner, group `core`'s.

The rules are pure (`assess`, `slack_payload`, `webhook_for`); reading the views and posting
(module notify) are thin I/O around them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.markdown import write_summary
from mediapulse.core.project import Project
from mediapulse.core.sources import declared_sources
from mediapulse.engines.base import Engine
from mediapulse.monitoring import changes, incidents, notify
from mediapulse.monitoring import views as monitoring

PAGE, TICKET = "page", "ticket"
_RANK = {PAGE: 0, TICKET: 1}

# what a run's problems are, in the order a message lists them: (one, several)
NOT_RECORDED = "not_recorded"
RELEASE_FAILED = "release_failed"
RUN_FAILED = "run_failed"
JOB_FAILED = "job_failed"
NODE_ERROR = "node_error"
TEST_FAILED = "test_failed"
STALE_MART = "stale_mart"
SCHEMA_CHANGE = "schema_change"
ROW_ANOMALY = "row_anomaly"
SLOW_MODEL = "slow_model"
STALE_SOURCE = "stale_source"
TEST_WARNED = "test_warned"
KINDS: dict[str, tuple[str, str]] = {
    NOT_RECORDED: ("job without a recorded run", "jobs without a recorded run"),
    RELEASE_FAILED: ("failed release", "failed releases"),
    RUN_FAILED: ("failed run", "failed runs"),
    JOB_FAILED: ("failed CI step", "failed CI steps"),
    NODE_ERROR: ("failed node", "failed nodes"),
    TEST_FAILED: ("failing test", "failing tests"),
    STALE_MART: ("stale critical mart", "stale critical marts"),
    SCHEMA_CHANGE: ("schema change", "schema changes"),
    ROW_ANOMALY: ("row-count anomaly", "row-count anomalies"),
    SLOW_MODEL: ("slow model", "slow models"),
    STALE_SOURCE: ("stale source", "stale sources"),
    TEST_WARNED: ("test warning", "test warnings"),
}
# the jobs that release production: their failure pages
RELEASE_JOBS = frozenset({"nightly", "deploy", "refresh"})
PLATFORM_GROUP = "core"  # whose owner gets what belongs to no group
ROWS, TIMES = "rows_added", "execution_time_s"  # module anomalies' names of the metrics

# tiers -> the environment variables (secrets) of their webhooks, tried in order: a page must
# reach someone, so with no page webhook it goes to the ticket channel; a ticket never pages.
# MEDIAPULSE_WEBHOOK_URL is the failure webhook `mediapulse notify` posts to.
PAGE_ENV, TICKET_ENV, FALLBACK_ENV = (
    "MEDIAPULSE_PAGE_WEBHOOK", "MEDIAPULSE_TICKET_WEBHOOK", "MEDIAPULSE_WEBHOOK_URL",
)  # fmt: skip
ROUTES = {PAGE: (PAGE_ENV, TICKET_ENV, FALLBACK_ENV), TICKET: (TICKET_ENV, FALLBACK_ENV)}
TIMEOUT_ENV = "MEDIAPULSE_ALERT_TIMEOUT_S"
TIMEOUT_S = 5.0  # short: the job waits for it, and a chat service answers in well under 1 s

# Slack's limits (Block Kit): 50 blocks a message, 150 characters a header, 3000 a section
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000
MAX_TEXT = 3000  # the fallback `text`: a notification's preview, kept short
MAX_OWNER_SECTIONS = 12  # header, facts, divider, owners, "more owners", context: <= 50
MAX_OWNERS_CHARS = 15_000  # the owners' sections together: a message read on a phone
MAX_ITEMS_SHOWN = 8  # per owner in a message; the job summary shows more
MAX_ITEMS_SUMMARY = 25
MAX_DETAIL = 160  # characters of dbt's message in an item


@dataclass(frozen=True)
class Owner:
    group: str | None
    name: str
    email: str | None = None


@dataclass(frozen=True)
class Directory:
    """Who owns what: each group's owner (models/_groups.yml) and the critical sources (their
    YAML's tag), which the run history does not record."""

    owners: Mapping[str, Owner]
    critical_sources: frozenset[str] = frozenset()
    platform_group: str = PLATFORM_GROUP

    @property
    def platform(self) -> Owner:
        return self.owners.get(self.platform_group) or Owner(None, "the data platform team")

    def owner(self, group: str | None) -> Owner:
        return self.owners.get(group or "") or self.platform


@dataclass(frozen=True)
class Run:
    run_id: str | None  # None: the job recorded no run
    job: str
    target: str
    status: str  # success, failed, skipped, or "not recorded"
    started_at: datetime | None = None
    git_revision: str | None = None
    release_id: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Run:
        return cls(
            row["run_id"], row["job"], row["target"], row["run_status"], row.get("started_at"),
            row.get("git_revision"), row.get("release_id"),
        )  # fmt: skip


@dataclass(frozen=True)
class Item:
    kind: str  # one of KINDS
    tier: str  # PAGE or TICKET
    subject: str  # the test, node, mart, source table or job
    detail: str = ""
    group: str | None = None  # the owning group; None: the platform's


@dataclass(frozen=True)
class Findings:
    """What the monitoring views say about one run (their rows, as dicts)."""

    failing_tests: Sequence[Mapping[str, Any]] = ()  # sli_failing_tests
    failed_nodes: Sequence[Mapping[str, Any]] = ()  # models, seeds, snapshots that failed
    stale_marts: Sequence[Mapping[str, Any]] = ()  # sli_critical_mart_freshness, not meeting it
    schema_changes: Sequence[Mapping[str, Any]] = ()  # sli_schema_changes
    row_anomalies: Sequence[Mapping[str, Any]] = ()  # sli_row_counts + is_critical, owner
    slow_models: Sequence[Mapping[str, Any]] = ()  # sli_model_execution_times, anomalous
    stale_sources: Sequence[Mapping[str, Any]] = ()  # sli_source_freshness, not passing


@dataclass
class Alert:
    run: Run
    items: list[Item]
    directory: Directory
    live_release: str | None = None  # what production serves after this run

    @property
    def tier(self) -> str:
        return min((i.tier for i in self.items), key=_RANK.__getitem__)

    def counts(self) -> dict[str, int]:
        found = [i.kind for i in self.items]
        return {kind: found.count(kind) for kind in KINDS if kind in found}

    def counts_text(self) -> str:
        return ", ".join(
            f"{n} {KINDS[kind][0] if n == 1 else KINDS[kind][1]}"
            for kind, n in self.counts().items()
        )

    def by_owner(self) -> list[tuple[Owner, list[Item]]]:
        """Items per owner, pages first; the owners with the most pages first."""
        grouped: dict[Owner, list[Item]] = {}
        for item in self.items:
            grouped.setdefault(self.directory.owner(item.group), []).append(item)
        order = list(KINDS)
        for items in grouped.values():
            items.sort(key=lambda i: (_RANK[i.tier], order.index(i.kind), i.subject))

        def rank(entry: tuple[Owner, list[Item]]) -> tuple[int, int, str]:
            owner, items = entry
            return (-sum(i.tier == PAGE for i in items), -len(items), owner.name)

        return sorted(grouped.items(), key=rank)

    @property
    def outcome(self) -> str:
        """The run as one word or two: failed, degraded (passed with problems), skipped..."""
        return {"success": "degraded", "not recorded": "recorded no run"}.get(
            self.run.status, self.run.status
        )

    def headline(self) -> str:
        run = self.run
        names = ", ".join(owner.name for owner, _ in self.by_owner())
        which = f", run {run.run_id}" if run.run_id else ""
        return (
            f"{self.tier} alert for {run.job} on '{run.target}' ({self.outcome}{which}): "
            f"{self.counts_text()}; owners: {names}"
        )


# -- the rules (pure) -------------------------------------------------------------------------


def _short(unique_id: str | None) -> str:
    """A node's name as people say it: `fct_watch_sessions`, `dim_users.v1`, `source
    ads.campaigns`."""
    if not unique_id:
        return "?"
    parts = unique_id.split(".")
    if parts[0] == "source" and len(parts) >= 4:
        return f"source {'.'.join(parts[2:])}"
    return ".".join(parts[2:]) or unique_id


def _first_line(text: Any) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 1] + "…"


def _number(value: Any, spec: str) -> str:
    return "?" if value is None else format(float(value), spec)


def assess(
    run_row: Mapping[str, Any],
    findings: Findings,
    directory: Directory,
    live_release: str | None = None,
    job_failed: bool = False,
) -> Alert | None:
    """The run's alert, or None for a healthy run. ``job_failed``: the CI job this runs in
    failed (a step after the run may have, with the run itself healthy)."""
    run = Run.from_row(run_row)
    items = [
        *_run_items(run, live_release, job_failed),
        *map(_failed_node, findings.failed_nodes),
        *map(_failing_test, findings.failing_tests),
        *map(_stale_mart, findings.stale_marts),
        *map(_schema_change_item, findings.schema_changes),
        *(_row_anomaly(row, directory) for row in findings.row_anomalies),
        *map(_slow_model, findings.slow_models),
        *map(_stale_source, findings.stale_sources),
    ]
    if not items:
        return None
    return Alert(run, items, directory, run.release_id or live_release)


def _run_items(run: Run, live_release: str | None, job_failed: bool) -> list[Item]:
    """The run's own failure, or its CI job's: a failed release pages, anything else tickets."""
    if run.status == "failed" and run.job in RELEASE_JOBS:
        stays = "production left as it was"
        if live_release:
            stays = f"production stays on release {live_release}"
        return [Item(RELEASE_FAILED, PAGE, run.job, stays)]
    if run.status == "failed":
        return [Item(RUN_FAILED, TICKET, run.job, f"{run.job} failed")]
    if job_failed:
        detail = "the run passed, a later step of the CI job failed: see its log"
        return [Item(JOB_FAILED, TICKET, run.job, detail)]
    return []


def _failed_node(row: Mapping[str, Any]) -> Item:
    tier = PAGE if row.get("is_critical") else TICKET
    detail = f"{row.get('resource_type')} {row.get('node_status')}"
    message = _first_line(row.get("message"))
    detail = f"{detail}: {message}" if message else detail
    return Item(NODE_ERROR, tier, str(row.get("node_name")), detail, row.get("owner"))


def _failing_test(row: Mapping[str, Any]) -> Item:
    """A failing test (pages when critical) or a warning (never pages)."""
    status = str(row.get("node_status"))
    warned = status == "warn"
    tier = PAGE if row.get("is_critical") and not warned else TICKET
    detail = f"{status} on {_short(row.get('tested_node'))}"
    if row.get("failures"):
        failures = int(row["failures"])
        detail += f": {failures:,} failing row{'s' if failures != 1 else ''}"
    elif _first_line(row.get("message")):
        detail += f": {_first_line(row.get('message'))}"
    kind = TEST_WARNED if warned else TEST_FAILED
    return Item(kind, tier, str(row.get("test_name")), detail, row.get("owner"))


def _stale_mart(row: Mapping[str, Any]) -> Item:
    slo = _number(row.get("freshness_slo_hours"), "g")
    if row.get("last_built_at") is None:
        detail = f"never built by a successful run (SLO {slo} h)"
    else:
        hours = _number(row.get("hours_since_last_build"), ".1f")
        detail = f"last successful build {hours} h ago (SLO {slo} h)"
    return Item(STALE_MART, PAGE, str(row.get("model_name")), detail, row.get("owner") or None)


def _schema_change_item(row: Mapping[str, Any]) -> Item:
    """A schema change: pages when it stops the job (severity error)."""
    tier = PAGE if row.get("severity") == "error" else TICKET
    table = f"source {row.get('source_name')}.{row.get('table_name')}"
    return Item(SCHEMA_CHANGE, tier, table, _schema_change(row))


def row_tier(row: Mapping[str, Any], directory: Directory) -> str:
    """A row-count anomaly pages on a critical model or source (wrong data passes tests),
    unless the release before it predicted it (module changes): expected, a ticket."""
    if row.get("expected"):
        return TICKET
    critical = bool(row.get("is_critical")) or row.get("unique_id") in directory.critical_sources
    return PAGE if critical else TICKET


def _incident_text(row: Mapping[str, Any], detail: str) -> str:
    """An anomaly's detail with its incident (module incidents) and the change behind it."""
    event, incident = row.get("incident_event"), row.get("incident_id")
    if event == "worsened":
        detail = f"worsened since first alerted, {detail}"
    if incident:
        detail += f"; incident {incident}"
    return detail + (f"; {row['change']}" if row.get("change") else "")


def _row_anomaly(row: Mapping[str, Any], directory: Directory) -> Item:
    detail = (
        f"{_number(row.get('rows_added'), '+,.0f')} rows added, usually "
        f"{_number(row.get('baseline_median_rows_added'), '+,.0f')} "
        f"(score {_number(row.get('anomaly_score'), '.1f')})"
    )
    uid = row.get("unique_id")
    tier = row_tier(row, directory)
    return Item(ROW_ANOMALY, tier, _short(uid), _incident_text(row, detail), row.get("owner"))


def _slow_model(row: Mapping[str, Any]) -> Item:
    detail = (
        f"{_number(row.get('execution_time_s'), '.1f')} s, usually "
        f"{_number(row.get('baseline_median_s'), '.1f')} s"
    )
    return Item(SLOW_MODEL, TICKET, str(row.get("model_name")), _incident_text(row, detail),
                row.get("owner"))  # fmt: skip


def _stale_source(row: Mapping[str, Any]) -> Item:
    detail = (
        f"freshness {row.get('freshness_status')}: newest load "
        f"{_number(row.get('age_hours'), '.1f')} h old"
    )
    table = f"source {row.get('source_name')}.{row.get('table_name')}"
    return Item(STALE_SOURCE, TICKET, table, detail)


def _schema_change(row: Mapping[str, Any]) -> str:
    column, kind = row.get("column_name"), row.get("change_kind")
    if kind == "renamed":
        text = f"column {row.get('renamed_from')} likely renamed to {column}"
    elif kind == "retyped":
        text = f"column {column} is {row.get('actual_type')}, declared {row.get('declared_type')}"
    elif kind == "missing_table":
        text = "table missing"
    else:
        text = f"column {column} {kind}"
    return f"{row.get('severity')}: {text}"


def not_recorded(
    job: str, target: str, job_failed: bool, within_min: float | None, directory: Directory,
    reason: str | None = None,
) -> Alert:  # fmt: skip
    """The alert for a job whose run is not in the history: it stopped before recording one
    (a refused refresh, a missing artifact, the runner) or its history cannot be read."""
    if reason:
        why = f"its run history cannot be read ({reason})"
    else:
        why = f"{job} recorded no run in the last {within_min:g} minutes"
    detail = (
        f"{why}: the CI job failed before or while it ran, see its log" if job_failed
        else f"{why} although the CI job passed: the run history is not being written"
    )  # fmt: skip
    run = Run(None, job, target, "not recorded")
    tier = PAGE if job_failed else TICKET
    return Alert(run, [Item(NOT_RECORDED, tier, job, detail)], directory)


# -- Slack's message (pure) -------------------------------------------------------------------

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _escape(text: str, limit: int | None = None) -> str:
    """Slack's mrkdwn escaping (&, <, >: only links use them), cut to ``limit`` characters
    after escaping (never inside an entity)."""
    out, size = [], 0
    for char in text:
        piece = _ESCAPES.get(char, char)
        if limit is not None and size + len(piece) > limit - 1:
            out.append("…")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _code(text: str) -> str:
    return "`" + _escape(text.replace("`", "'"), 120) + "`"


def _item_line(item: Item, code: Callable[[str], str], escape: Callable[[str], str]) -> str:
    mark = "🔴" if item.tier == PAGE else "🟡"
    label = KINDS[item.kind][0]
    return f"{mark} {label} {code(item.subject)}: {escape(item.detail)}"


def _owner_text(owner: Owner, items: list[Item], shown: int, bold: Callable[[str], str],
                code: Callable[[str], str], escape: Callable[[str], str],
                limit: int, bullet: str = "• ") -> str:  # fmt: skip
    """An owner's part of the message: who, then their items, capped by number and size."""
    pages = sum(i.tier == PAGE for i in items)
    who = bold(escape(owner.name))
    if owner.email:
        who += f" ({escape(owner.email)})"
    if owner.group:
        who += f", group {code(owner.group)}"
    counted = f"{len(items)} item{'s' if len(items) != 1 else ''}"
    lines = [f"{who}: {counted}" + (f", {pages} to page" if pages else "")]
    size = len(lines[0])
    reserve = 60  # for the "and N more" line
    listed = 0
    for item in items[:shown]:
        line = bullet + _item_line(item, code, escape)
        if size + 1 + len(line) > limit - reserve:
            break
        lines.append(line)
        size += 1 + len(line)
        listed += 1
    if listed < len(items):
        lines.append(f"… and {len(items) - listed} more (see the job summary)")
    return "\n".join(lines)


def _facts(alert: Alert, run_url: str | None) -> str:
    run = alert.run
    first = f"*{_escape(run.job)}* on target {_code(run.target)}: *{alert.outcome}*"
    if run.run_id:
        first += f", run {_code(run.run_id)}"
    second = []
    if run.started_at:
        second.append(f"started {run.started_at:%Y-%m-%d %H:%M} UTC")
    if run.git_revision:
        second.append(f"commit {_code(run.git_revision[:7])}")
    if run.status == "failed" and run.job in RELEASE_JOBS:
        live = alert.live_release
        second.append(f"production stays on release {_code(live)}" if live else
                      "production left as it was")  # fmt: skip
    elif alert.live_release:
        second.append(f"release {_code(alert.live_release)}")
    if run_url:
        second.append(f"<{run_url}|the CI run>")
    lines = [first, " · ".join(second), f"*{_escape(alert.counts_text())}*"]
    return _cut("\n".join(line for line in lines if line), MAX_SECTION)


def _cut(text: str, limit: int) -> str:
    """Cut already escaped text to ``limit`` characters (facts are short; this is a guard)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fallback_text(alert: Alert, run_url: str | None) -> str:
    """The message's `text`: what notifications and clients without blocks show."""
    run = alert.run
    owners = [owner.name for owner, _ in alert.by_owner()]
    named = ", ".join(owners[:10]) + (f" and {len(owners) - 10} more" if len(owners) > 10 else "")
    which = f" (run {run.run_id})" if run.run_id else ""
    text = (
        f"MediaPulse {alert.tier}: {run.job} on {run.target} {alert.outcome}{which}: "
        f"{alert.counts_text()}. Owners: {named}."
    )
    text = _escape(text, MAX_TEXT - 200)
    return text + (f" <{run_url}|the CI run>" if run_url else "")


def slack_payload(alert: Alert, run_url: str | None) -> dict[str, Any]:
    """A message Slack's incoming webhooks accept: `text` (the fallback, always present) and
    Block Kit blocks within Slack's limits, however many items the run has."""
    emoji = ":rotating_light:" if alert.tier == PAGE else ":ticket:"
    header = f"{emoji} {alert.tier.capitalize()}: {alert.run.job} on {alert.run.target} "
    header += alert.outcome
    title = {"type": "plain_text", "text": header[:MAX_HEADER], "emoji": True}
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": title},
        _section(_facts(alert, run_url)),
        {"type": "divider"},
    ]
    owners = alert.by_owner()
    shown = owners[:MAX_OWNER_SECTIONS]
    limit = min(MAX_SECTION, MAX_OWNERS_CHARS // max(len(shown), 1))
    for owner, items in shown:
        text = _owner_text(owner, items, MAX_ITEMS_SHOWN, _bold, _code, _detail, limit)
        blocks.append(_section(text))
    if len(owners) > len(shown):
        rest = owners[len(shown) :]
        names = ", ".join(owner.name for owner, _ in rest)
        more = f"… and {len(rest)} more owners with {sum(len(i) for _, i in rest)} items"
        blocks.append(_section(_escape(f"{more} (see the job summary): {names}", MAX_SECTION)))
    where = f"<{run_url}|the CI run> · " if run_url else ""
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
        f"{where}one message per run, from `mediapulse alert`: page = act now, "
        "ticket = look today")}]})  # fmt: skip
    assert len(blocks) <= MAX_BLOCKS
    return {"text": _fallback_text(alert, run_url), "blocks": blocks}


def _bold(text: str) -> str:
    return f"*{text}*"


def _detail(text: str) -> str:
    return _escape(text, 400)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_SECTION]}}


def summary_markdown(alert: Alert) -> str:
    """The alert for the job summary (GitHub Markdown): every owner, more items each."""
    lines = [f"## Alert: {alert.tier} for {alert.run.job} on `{alert.run.target}`", "",
             alert.headline(), ""]  # fmt: skip
    for owner, items in alert.by_owner():
        text = _owner_text(owner, items, MAX_ITEMS_SUMMARY, _md_bold, _md_code, str, 20_000,
                           bullet="- ")  # fmt: skip
        lines.append("- " + text.replace("\n", "\n  "))  # its items: a list inside the list
    return "\n".join(lines)


def _md_bold(text: str) -> str:
    return f"**{text}**"


def _md_code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


# -- resolved incidents (pure) ---------------------------------------------------------------

METRIC_WORDS = {ROWS: "row-count anomaly", TIMES: "slow model"}


def _by_tier(events: list[incidents.Event]) -> list[tuple[str, list[incidents.Event]]]:
    """Resolved incidents by the tier they were alerted as: a page's end goes where it paged."""
    tiers = sorted({e.incident.tier or TICKET for e in events}, key=_RANK.__getitem__)
    return [(t, [e for e in events if (e.incident.tier or TICKET) == t]) for t in tiers]


def _resolved_line(event: incidents.Event) -> str:
    incident, judged = event.incident, event.judged
    what = METRIC_WORDS.get(incident.metric, incident.metric)
    unit = " rows added" if incident.metric == ROWS else " s"
    value = _number(judged.value, "+,.0f" if incident.metric == ROWS else ".1f")
    opened = f"{incident.opened_at:%Y-%m-%d %H:%M}" if incident.opened_at else "?"
    how = "back in its band" if event.kind == incidents.RESOLVED else (
        "accepted as the new normal (a level shift that lasted)")  # fmt: skip
    return (
        f"{what} {_short(incident.unique_id)} {how}: {value}{unit} "
        f"(score {_number(judged.score, '.1f')}); incident {incident.incident_id}, opened "
        f"{opened} UTC by {incident.job}, peak score {_number(incident.peak_score, '.1f')}"
    )


def resolved_payload(
    run: Mapping[str, Any], events: list[incidents.Event], run_url: str | None
) -> dict[str, Any]:
    """The "resolved" message of the incidents a run closed (Slack's limits kept): a new
    message naming each incident's id (an incoming webhook cannot edit the one that opened it).
    """
    count = f"{len(events)} incident{'s' if len(events) != 1 else ''}"
    kinds = {e.kind for e in events}
    how = {frozenset({incidents.RESOLVED}): "back in band",
           frozenset({incidents.ACCEPTED}): "accepted as the new normal"}.get(
        frozenset(kinds), "closed")  # fmt: skip
    text = _escape(
        f"MediaPulse resolved: {count} on {run.get('target')} {how} after "
        f"{run.get('job')} run {run.get('run_id')}", MAX_TEXT - 200,
    )  # fmt: skip
    header = f":white_check_mark: Resolved: {count} on {run.get('target')}"
    lines = [f"✅ {_escape(_resolved_line(e))}" for e in events[:MAX_ITEMS_SHOWN]]
    if len(events) > MAX_ITEMS_SHOWN:
        lines.append(f"… and {len(events) - MAX_ITEMS_SHOWN} more (see the job summary)")
    where = f"<{run_url}|the CI run> · " if run_url else ""
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": header[:MAX_HEADER],
                                    "emoji": True}},
        _section(_cut("\n".join(lines), MAX_SECTION)),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"{where}from `mediapulse alert`: an incident is alerted once, updated when it "
            "worsens, resolved when back in its band or its new level is accepted")}]},
    ]  # fmt: skip
    return {"text": text, "blocks": blocks}


def resolved_markdown(run: Mapping[str, Any], events: list[incidents.Event]) -> str:
    lines = [f"## Resolved after {run.get('job')} on `{run.get('target')}`", ""]
    lines += [f"- {_resolved_line(e)}" for e in events[:MAX_ITEMS_SUMMARY]]
    return "\n".join(lines)


# -- routing (pure) ---------------------------------------------------------------------------


def webhook_for(tier: str, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The environment variable whose webhook takes ``tier``, and how to name it in a
    report; (None, the variables tried) when none is set."""
    routes = ROUTES[tier]
    for env in routes:
        if environ.get(env, "").strip():
            own = env == routes[0]
            where = f"the {tier} webhook ({env})" if own else (
                f"the webhook in {env} (no {routes[0]} is set)")  # fmt: skip
            return env, where
    return None, " or ".join(routes)


# -- reading the views, posting, the command --------------------------------------------------


def directory(project: Project) -> Directory:
    """Group owners from the project's YAML (`groups:`, models/_groups.yml) and the sources
    tagged `critical`; no dbt parse."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    owners: dict[str, Owner] = {}
    for path in sorted((project.root / "models").rglob("*.yml")):
        text = path.read_text()
        if not text.startswith("groups:") and "\ngroups:" not in text:
            continue
        try:
            document = yaml.load(text, Loader=loader) or {}
        except yaml.YAMLError as exc:
            raise MediaPulseError(f"cannot read {path}: {exc}") from exc
        for group in document.get("groups") or []:
            owner = group.get("owner") or {}
            owners[group["name"]] = Owner(group["name"], str(owner.get("name") or group["name"]),
                                          owner.get("email"))  # fmt: skip
    name = project.dbt_project_name
    critical = frozenset(
        f"source.{name}.{t.source_name}.{t.table_name}"
        for t in declared_sources(project) if t.critical
    )  # fmt: skip
    return Directory(owners, critical)


def find_run(reader: Any, target: str, job: str | None = None) -> dict[str, Any] | None:
    """The latest run of ``job`` (any job: None) on ``target``."""
    m = reader.marker
    sql = f"select * from {{views}}.sli_runs where target = {m}"
    params: list[Any] = [target]
    if job:
        sql += f" and job = {m}"
        params.append(job)
    rows = reader.rows(sql + " order by started_at desc limit 1", params)
    return rows[0] if rows else None


@dataclass
class Outcome:
    """What `mediapulse alert` found for a run: its alert (None: nothing new to send), what
    the run did to the incidents, and whether that is new (to keep in the history)."""

    alert: Alert | None
    run: dict[str, Any] | None = None
    events: list[incidents.Event] = field(default_factory=list)
    advanced: bool = False  # the events are this call's, not recorded before
    healthy: str = ""

    def of(self, kind: str) -> list[incidents.Event]:
        return [e for e in self.events if e.kind == kind]


def collect(
    reader: Any, run_id: str, directory: Directory, job_failed: bool = False
) -> Alert | None:
    """The alert for run ``run_id`` from the monitoring views (``monitoring.reader``), or None
    for a healthy run. Critical marts are judged as of now."""
    return collect_run(reader, run_id, directory, job_failed).alert


def collect_run(
    reader: Any, run_id: str, directory: Directory, job_failed: bool = False
) -> Outcome:
    """The run's alert and incident events: an anomaly is alerted when it opens an incident or
    worsens one, never again while it goes on (module incidents)."""
    m = reader.marker
    runs = reader.rows(f"select * from {{views}}.sli_runs where run_id = {m}", [run_id])
    if not runs:
        raise MediaPulseError(f"no run {run_id} in the run history")
    run = runs[0]
    live = reader.rows(
        f"select release_id from {{views}}.sli_runs where target = {m} and release_id is not null"
        f" and started_at <= {m} order by started_at desc limit 1",
        [run["target"], run["started_at"]],
    )  # fmt: skip
    findings = _findings(reader, run_id)
    events = incidents.recorded_events(reader, run_id)
    advanced = events is None
    if events is None:
        releases = changes.releases_between(reader, run["target"], run)

        def cause(judged: incidents.Judged) -> tuple[bool, str, str | None]:
            found = changes.judge(judged.unique_id, judged.metric, judged.deviation, releases,
                                  run["job"])  # fmt: skip
            return found.expected, found.text, found.release and found.release.release_id

        opened = incidents.open_incidents(reader, run["target"])
        events = incidents.advance(opened, incidents.judged_in(reader, run_id), run, cause)
    findings = _with_incidents(findings, events, directory)
    events = [_tiered(e, directory, findings) for e in events]
    alert = assess(run, findings, directory, live[0]["release_id"] if live else None, job_failed)
    return Outcome(alert, run, events, advanced)


def _findings(reader: Any, run_id: str) -> Findings:
    def of_run(sql: str) -> list[dict[str, Any]]:
        return reader.rows(sql.replace("{run}", reader.marker), [run_id])

    return Findings(
        failing_tests=of_run(
            "select * from {views}.sli_failing_tests where run_id = {run} order by test_name"),
        failed_nodes=of_run(
            "select * from {views}.stg_monitoring__node_results "
            "where run_id = {run} and not is_test and is_failed order by node_name"),
        stale_marts=reader.rows(
            "select * from {views}.sli_critical_mart_freshness where not meets_slo "
            "order by model_name"),
        schema_changes=of_run(
            "select * from {views}.sli_schema_changes where run_id = {run} "
            "order by source_name, table_name, column_name"),
        # what the run history knows of each node (its latest owner and tag): the views of
        # row counts carry neither
        row_anomalies=of_run(
            "select counts.*, known.is_critical, known.owner "
            "from {views}.sli_row_counts as counts left join ("
            "  select unique_id, max(owner) as owner,"
            "  max(case when is_critical then 1 else 0 end) = 1 as is_critical"
            "  from {views}.stg_monitoring__node_results where not is_test group by unique_id"
            ") as known on counts.unique_id = known.unique_id "
            "where counts.run_id = {run} and counts.is_anomaly order by counts.unique_id"),
        slow_models=of_run(
            "select * from {views}.sli_model_execution_times where run_id = {run} "
            "and is_anomaly order by model_name"),
        stale_sources=of_run(
            "select * from {views}.sli_source_freshness where run_id = {run} "
            "and freshness_status <> 'pass' order by source_name, table_name"),
    )  # fmt: skip


def _with_incidents(
    findings: Findings, events: list[incidents.Event], directory: Directory
) -> Findings:
    """The anomalies to alert: those that opened or worsened an incident, with its id and the
    change behind it; an ongoing incident's anomaly is left out (it was alerted)."""
    news = (incidents.OPENED, incidents.WORSENED)
    alerted = {e.incident.key: e for e in events if e.kind in news}

    def keep(rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
        kept = []
        for row in rows:
            event = alerted.get((str(row.get("unique_id")), metric))
            if event is not None:
                kept.append({**row, "incident_event": event.kind,
                             "incident_id": event.incident.incident_id,
                             "change": event.incident.cause,
                             "expected": event.incident.expected})  # fmt: skip
        return kept

    return replace(
        findings, row_anomalies=keep(findings.row_anomalies, ROWS),
        slow_models=keep(findings.slow_models, TIMES),
    )  # fmt: skip


def _tiered(event: incidents.Event, directory: Directory, findings: Findings) -> incidents.Event:
    """An incident opened by this run gets the tier of its alert (its resolution goes there)."""
    if event.kind != incidents.OPENED:
        return event
    tier = TICKET
    if event.incident.metric == ROWS:
        row = next((r for r in findings.row_anomalies
                    if r.get("unique_id") == event.incident.unique_id), None)  # fmt: skip
        tier = row_tier(row, directory) if row is not None else TICKET
    return replace(event, incident=replace(event.incident, tier=tier))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def timeout_s(explicit: float | None) -> float:
    if explicit is not None:
        return explicit
    try:
        return float(os.environ.get(TIMEOUT_ENV) or TIMEOUT_S)
    except ValueError:
        raise MediaPulseError(f"{TIMEOUT_ENV} is not a number of seconds") from None


def _history_error(exc: Exception) -> str | None:
    """The reason a history could not be read, for the errors that mean that."""
    import duckdb

    if isinstance(exc, MediaPulseError | duckdb.Error | OSError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if type(exc).__module__.split(".")[0] == "psycopg2":
        return str(exc).strip().splitlines()[0]
    return None


def _find_alert(
    engine: Engine, job: str | None, run_id: str | None,
    within_min: float | None, job_failed: bool,
) -> Outcome:  # fmt: skip
    """The alert to send and what the run was, from the target's monitoring views (built
    first when missing: a target where no nightly or deploy built them yet)."""
    project, target = engine.project, engine.target
    with monitoring.reader(engine) as reader:
        built = reader.built
    if not built:
        ok, line = monitoring.build(engine)
        if not ok:
            raise MediaPulseError(line.removeprefix("notice: "))
    with monitoring.reader(engine) as reader:
        if run_id is None:
            run = find_run(reader, target, job)
            started = run and run.get("started_at")
            too_old = within_min is not None and (
                started is None or _now() - started > timedelta(minutes=within_min)
            )  # fmt: skip
            if run is None or too_old:
                if within_min is None:
                    raise MediaPulseError(f"no run of {job or 'any job'} on '{target}' recorded")
                owners = directory(project)
                return Outcome(not_recorded(job or "any job", target, job_failed, within_min,
                                            owners))  # fmt: skip
            run_id = str(run["run_id"])
        outcome = collect_run(reader, run_id, directory(project), job_failed)
    if outcome.alert is None:
        run = outcome.run or {}
        ongoing = len(outcome.of(incidents.ONGOING))
        state = "is healthy" if not ongoing else (
            f"has nothing new: {ongoing} ongoing incident{'s' if ongoing != 1 else ''}, "
            "alerted when opened")  # fmt: skip
        what = f"{run.get('job')} on '{target}', {run.get('run_status')}"
        outcome.healthy = f"run {run_id} ({what}) {state}"
    return outcome


def run_alert(
    engine: Engine,
    job: str | None = None,
    run_id: str | None = None,
    summary: Path | None = None,
    dry_run: bool = False,
    timeout: float | None = None,
    within_min: float | None = None,
    job_failed: bool = False,
) -> int:
    """`mediapulse alert`: the run's alert to its tier's webhook, and a "resolved" message for
    each incident it closed. Exits 0 whatever the webhook does: the job's result is the job's,
    a failure to alert is reported (the output and the job summary) and changes nothing."""
    project, target = engine.project, engine.target
    project.check_target(target)
    wait = timeout_s(timeout)
    try:
        outcome = _find_alert(engine, job, run_id, within_min, job_failed)
    except Exception as exc:
        reason = _history_error(exc)
        if reason is None:
            raise
        if not job_failed or run_id is not None:
            return _report(f"alert not sent: {reason}", summary)
        # the job failed and its history says nothing: the failure must still reach someone
        try:
            owners = directory(project)
        except MediaPulseError:
            owners = Directory({})
        outcome = Outcome(not_recorded(job or "the job", target, True, within_min, owners, reason))
    if outcome.advanced and outcome.run is not None and not dry_run:
        incidents.save(engine, str(outcome.run["run_id"]), outcome.events, _now())
    resolved = [e for e in outcome.events if e.kind in incidents.CLOSING]
    if outcome.alert is None and not resolved:
        return _report(f"no alert: {outcome.healthy}", summary)
    lines: list[str] = []
    markdown: list[str] = []
    if outcome.alert is not None:
        alert = outcome.alert
        payload = slack_payload(alert, notify.run_url())
        lines += [alert.headline(), _deliver(alert.tier, payload, dry_run, wait)]
        markdown += [summary_markdown(alert), "", lines[-1], ""]
    for tier, events in _by_tier(resolved):
        assert outcome.run is not None
        payload = resolved_payload(outcome.run, events, notify.run_url())
        lines += [payload["text"], _deliver(tier, payload, dry_run, wait)]
        markdown += [resolved_markdown(outcome.run, events), "", lines[-1], ""]
    print("\n".join(lines))
    write_summary("\n".join(markdown), summary)
    return 0


def _deliver(tier: str, payload: dict[str, Any], dry_run: bool, wait: float) -> str:
    """Post ``payload`` to ``tier``'s webhook; the line that says what happened."""
    env, where = webhook_for(tier, os.environ)
    if dry_run:
        print(json.dumps(payload, indent=2))
        return f"dry run: nothing sent (would go to {where if env else 'no webhook'})"
    if env is None:
        return f"alert not sent: no webhook set for {tier}s ({where})"
    started = time.perf_counter()
    try:
        url = notify.webhook_url(env)
        assert url is not None  # webhook_for checked it is set
        notify.post_json(url, payload, wait, where)
    except notify.DeliveryError as exc:
        return f"alert not delivered: {exc}"
    return f"alert delivered to {where} in {time.perf_counter() - started:.1f} s"


def _report(line: str, summary: Path | None) -> int:
    print(line)
    write_summary(f"## Alert\n\n{line}\n", summary)
    return 0
