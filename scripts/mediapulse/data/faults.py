"""Named faults the generator can inject into the raw data, each caught by a named dbt test.

A fault is applied inside the generator's transaction, after the clean rows of the load
window are written, so a faulty data set is made exactly like a clean one plus the damage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import duckdb


@dataclass(frozen=True)
class FaultContext:
    con: duckdb.DuckDBPyConnection
    seed: int
    window_after: datetime | None  # the load window just written (after, until]
    window_until: datetime


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    apply: Callable[[FaultContext], None]


FAULTS: dict[str, Fault] = {}


def register(name: str, description: str) -> Callable[[Callable[[FaultContext], None]], Callable]:
    def decorator(fn: Callable[[FaultContext], None]) -> Callable[[FaultContext], None]:
        FAULTS[name] = Fault(name, description, fn)
        return fn

    return decorator


def _window(ctx: FaultContext, column: str = "loaded_at") -> str:
    """SQL condition: the row was loaded in the window just written."""
    until = f"{column} <= timestamp '{ctx.window_until:%Y-%m-%d %H:%M:%S}'"
    if ctx.window_after is None:
        return until
    return f"{column} > timestamp '{ctx.window_after:%Y-%m-%d %H:%M:%S}' and {until}"


def _sample(ctx: FaultContext, table: str, key: str, rows: int, where: str = "true") -> str:
    """SQL: ``rows`` keys of ``table`` chosen deterministically (by seed) among ``where``."""
    return (
        f"select {key} from {table} where {where} "
        f"order by hash({key}, {int(ctx.seed)}, '{table}') limit {int(rows)}"
    )


def _update_sample(
    ctx: FaultContext, table: str, key: str, rows: int, assignment: str, where: str
) -> None:
    """``update table set assignment`` on ``rows`` keys chosen by ``_sample``."""
    ctx.con.execute(
        f"update {table} set {assignment} where {key} in ("
        + _sample(ctx, table, key, rows, where)
        + ")"
    )


@register("renamed_column", "accounts.users.user_id is renamed to userId (an upstream refactor)")
def _renamed_column(ctx: FaultContext) -> None:
    ctx.con.execute('alter table accounts.users rename column user_id to "userId"')


@register("null_keys", "50 newly loaded watch events lose their user_id")
def _null_keys(ctx: FaultContext) -> None:
    _update_sample(ctx, "streaming.watch_events", "event_id", 50, "user_id = null", _window(ctx))


@register(
    "late_redelivery",
    "40 events of the first day are delivered again at the end of the load window, days "
    "after their first copy (beyond the de-duplication window)",
)
def _late_redelivery(ctx: FaultContext) -> None:
    first_day = ctx.con.execute(
        "select min(cast(event_ts as date)) from streaming.watch_events"
    ).fetchone()[0]
    resent_at = f"timestamp '{ctx.window_until:%Y-%m-%d %H:%M:%S}' - interval 1 hour"
    ctx.con.execute(
        f"""
        insert into streaming.watch_events
        select event_id, user_id, content_id, device_type, event_type, event_ts,
            position_sec, {resent_at} as loaded_at
        from streaming.watch_events
        where event_id in ({
            _sample(
                ctx,
                "streaming.watch_events",
                "event_id",
                40,
                f"cast(event_ts as date) = date '{first_day}'",
            )
        })
        qualify row_number() over (partition by event_id order by loaded_at) = 1
        """
    )


@register("negative_revenue", "30 newly loaded completed ad impressions book negative revenue")
def _negative_revenue(ctx: FaultContext) -> None:
    _update_sample(
        ctx, "ads.ad_impressions", "impression_id", 30, "revenue_micros = -revenue_micros",
        f"{_window(ctx)} and revenue_micros > 0",
    )  # fmt: skip


@register("future_timestamps", "500 newly loaded watch events are stamped 30 days ahead")
def _future_timestamps(ctx: FaultContext) -> None:
    _update_sample(
        ctx, "streaming.watch_events", "event_id", 500, "event_ts = event_ts + interval 30 day",
        _window(ctx),
    )  # fmt: skip


@register(
    "future_loaded_at",
    "a loader worker whose clock is a year ahead stamps 25 newly loaded watch events and 10 "
    "ad impressions with a loaded_at 365 days in the future",
)
def _future_loaded_at(ctx: FaultContext) -> None:
    # Only ids delivered once: moving one copy of a re-sent event a year away from the other
    # would also look like a replay (`redelivered_within_window`), a second fault in one.
    for table, key, rows in (
        ("streaming.watch_events", "event_id", 25),
        ("ads.ad_impressions", "impression_id", 10),
    ):
        delivered_once = f"{key} in (select {key} from {table} group by {key} having count(*) = 1)"
        _update_sample(
            ctx, table, key, rows, "loaded_at = loaded_at + interval 365 day",
            f"{_window(ctx)} and {delivered_once}",
        )  # fmt: skip


@register("missing_day", "every watch event of the middle day of the data set is lost")
def _missing_day(ctx: FaultContext) -> None:
    ctx.con.execute(
        """
        delete from streaming.watch_events
        where cast(event_ts as date) = (
            select cast(min(event_ts) as date)
                + cast((max(cast(event_ts as date)) - min(cast(event_ts as date))) / 2 as integer)
            from streaming.watch_events
        )
        """
    )


@register(
    "orphan_impression",
    "20 newly loaded ad impressions point at content_id 99999999, which the catalog lacks",
)
def _orphan_impression(ctx: FaultContext) -> None:
    _update_sample(
        ctx, "ads.ad_impressions", "impression_id", 20, "content_id = 99999999", _window(ctx)
    )


@register("unknown_currency", "one subscription is billed in XTS, a currency we have no rate for")
def _unknown_currency(ctx: FaultContext) -> None:
    ctx.con.execute(
        "update billing.subscriptions set currency = 'XTS' where subscription_id = "
        "(select min(subscription_id) from billing.subscriptions)"
    )
