"""Finance end to end on DuckDB: revenue as of a date stops on that date, whatever the data
holds after it, and neither a stalled event stream nor a load stamped in the future moves it.

Each test works on a copy of the session's built warehouse and reads the marts a user reads.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import pytest

from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.dbt.runner import DbtRun, run_dbt
from mediapulse.develop import build
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.targets import resolve
from mediapulse.jobs import prepare

from ..conftest import clone_built, manifest_models, relation_of

pytestmark = pytest.mark.dbt

FINANCE_MODELS = frozenset(
    {
        "int_subscriptions_converted_to_usd",
        "int_revenue_as_of_date",
        "int_subscription_months_prorated",
        "int_subscription_revenue_allocated",
        "fct_subscription_revenue",
        "revenue_by_content",
    }
)


def _dbt(project: Project, *args: str) -> DbtRun:
    return run_dbt(
        resolve(project, "dev"), list(args), extra_env=prepare.target_env(resolve(project, "dev"))
    )


def _finance_problems(project: Project) -> list[str]:
    """Finance models, and the tests on them, that did not succeed in the last dbt run."""
    return [
        r.describe()
        for r in artifacts.node_results(project.target_dir)
        if (r.name in FINANCE_MODELS or r.model in FINANCE_MODELS)
        and r.status not in ("success", "pass")
    ]


def _connect(project: Project) -> duckdb.DuckDBPyConnection:
    """The dev warehouse, read-only, with the raw data attached as the models see it."""
    con = duckdb.connect(str(duckdb_file(project, "dev")), read_only=True)
    con.execute(f"attach '{project.raw_path}' as raw (read_only)")
    return con


def _mart(project: Project, name: str) -> str:
    return relation_of(manifest_models(project)[name])


def _month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def _assert_revenue_stops_on(project: Project, as_of: dt.date) -> None:
    """No revenue after `as_of`: no later month, no period that starts later, and in the as-of
    month no period earns more days than it was active through the as-of day (included)."""
    fct = _mart(project, "fct_subscription_revenue")
    by_content = _mart(project, "revenue_by_content")
    with _connect(project) as con:
        latest_months = con.execute(
            f"select (select max(revenue_month) from {fct}), "
            f"(select max(revenue_month) from {by_content})"
        ).fetchone()
        assert latest_months == (_month_start(as_of), _month_start(as_of)), (
            f"revenue months run to {latest_months}, past the as-of date {as_of}"
        )
        started_later = con.execute(
            f"select count(*) from {fct} as fct inner join raw.billing.subscriptions as raw_sub "
            "using (subscription_id) where cast(raw_sub.started_at as date) > ?",
            [as_of],
        ).fetchone()[0]
        assert started_later == 0, f"{started_later} rows of periods that start after {as_of}"
        rows = con.execute(
            f"""
            select
                fct.subscription_id,
                greatest(cast(raw_sub.started_at as date), fct.revenue_month) as first_day,
                raw_sub.ended_at is null or cast(raw_sub.ended_at as date) > ? as active_on_as_of,
                fct.days_active_in_month,
                fct.days_in_month,
                fct.monthly_price_usd,
                fct.recognized_revenue_usd,
                fct.is_subscription_active
            from {fct} as fct
            inner join raw.billing.subscriptions as raw_sub using (subscription_id)
            where fct.revenue_month = ?
            """,
            [as_of, _month_start(as_of)],
        ).fetchall()
    assert rows, f"no revenue in the as-of month {_month_start(as_of)}"
    for sub_id, first_day, active, days, days_in_month, price, revenue, flagged in rows:
        through_as_of = (as_of - first_day).days + 1
        assert days <= through_as_of, f"subscription {sub_id}: {days} days, past {as_of}"
        if active:
            assert days == through_as_of, f"subscription {sub_id} active on {as_of}: {days} days"
            assert flagged, f"subscription {sub_id} is active on {as_of} but not flagged so"
        # Exact decimals: the prorated amount is the exact quotient rounded to six decimals.
        exact = (price * days / days_in_month).quantize(Decimal("0.000001"), ROUND_HALF_UP)
        assert revenue == exact, f"subscription {sub_id}: {revenue} != {exact}"


def test_pinned_as_of_date_stops_revenue_on_that_day(built: Project, tmp_path: Path) -> None:
    project = clone_built(built, tmp_path / "pinned")
    with duckdb.connect(str(project.raw_path), read_only=True) as raw:
        latest_start, latest_end = raw.execute(
            "select cast(max(started_at) as date), cast(max(ended_at) as date) "
            "from billing.subscriptions"
        ).fetchone()
        # Inside the data: some periods start after the as-of date, some end after it.
        as_of = min(latest_start, latest_end) - dt.timedelta(days=1)
        starting_later, ending_later = raw.execute(
            "select count(*) filter (where cast(started_at as date) > $1), "
            "count(*) filter (where cast(ended_at as date) > $1 and started_at <= $1) "
            "from billing.subscriptions",
            [as_of],
        ).fetchone()
    assert starting_later > 0 and ending_later > 0, "the data set does not exercise the as-of date"

    run = _dbt(project, "build", "--vars", json.dumps({"revenue_as_of_date": as_of.isoformat()}))

    assert run.success and not _finance_problems(project), _finance_problems(project) or run.error
    _assert_revenue_stops_on(project, as_of)


def test_a_stalled_event_stream_does_not_stop_finance(built: Project, tmp_path: Path) -> None:
    project = clone_built(built, tmp_path / "stalled")
    with duckdb.connect(str(project.raw_path)) as raw:
        synced_at = raw.execute("select max(loaded_at) from billing.subscriptions").fetchone()[0]
        # The nightly billing sync says how current billing is; a sync at midnight covers the
        # day before it.
        last_day = (synced_at - dt.timedelta(seconds=1)).date()
        # Player events stop loading three days before the end, while billing keeps syncing
        # and an account that had cancelled subscribes again on the last day.
        raw.execute(
            "delete from streaming.watch_events where loaded_at >= ?",
            [last_day - dt.timedelta(days=2)],
        )
        raw.execute(
            """
            insert into billing.subscriptions
            select
                user_id * 10 + 9, user_id, plan_code, 'active', $1, null, price_amount,
                currency, $1, loaded_at
            from billing.subscriptions
            where user_id = (
                select min(user_id) from billing.subscriptions
                group by user_id having count(ended_at) = count(*)
                order by 1 limit 1
            )
            order by started_at desc
            limit 1
            """,
            [dt.datetime.combine(last_day, dt.time(12))],
        )
        assert raw.execute("select count(*) from streaming.watch_events").fetchone()[0] > 0

    assert build.main_job(resolve(project, "dev"), full_refresh=True) == 0
    assert not _finance_problems(project)
    _assert_revenue_stops_on(project, last_day)
    with _connect(project) as con:
        resubscribed = con.execute(
            f"select days_active_in_month from {_mart(project, 'fct_subscription_revenue')} "
            "where subscription_id % 10 = 9"
        ).fetchall()
    assert resubscribed == [(1,)], "the period that started on the last day earns that day"


def test_loads_stamped_in_the_future_book_no_revenue_after_the_run(
    built: Project, tmp_path: Path
) -> None:
    project = clone_built(built, tmp_path / "future")
    future = dt.datetime(2099, 1, 1)
    with duckdb.connect(str(project.raw_path)) as raw:
        # A loader with a wrong clock: one billing row and one player event stamped in 2099.
        raw.execute(
            "update billing.subscriptions set loaded_at = ? where subscription_id = "
            "(select min(subscription_id) from billing.subscriptions)",
            [future],
        )
        raw.execute(
            "update streaming.watch_events set loaded_at = ? where event_id = "
            "(select min(event_id) from streaming.watch_events)",
            [future],
        )
    run_day = dt.datetime.now(dt.UTC).date()

    # `dbt run`, not `build`: what the models compute, whatever a gate on such rows says.
    run = _dbt(project, "run", "--full-refresh")

    assert run.success, run.error
    # Revenue runs through the day the run started, never into 2099.
    if dt.datetime.now(dt.UTC).date() != run_day:
        pytest.fail("the run crossed midnight UTC; run the test again")
    _assert_revenue_stops_on(project, run_day)


@pytest.mark.parametrize("value", ["31/03/2026", "2026-02-30"])
def test_a_pinned_date_that_is_not_a_day_is_one_clear_error(
    built: Project, tmp_path: Path, value: str
) -> None:
    project = clone_built(built, tmp_path / "bad")

    # dbt renders every model when it parses the project, so the check stops any command.
    run = _dbt(project, "parse", "--vars", json.dumps({"revenue_as_of_date": value}))

    assert not run.success
    expected = (
        f"var revenue_as_of_date is '{value}', not a day: set it to a date as YYYY-MM-DD "
        "(e.g. --vars '{revenue_as_of_date: 2026-03-31}')"
    )
    assert expected in (run.error or ""), run.error
