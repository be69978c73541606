"""Marts compared row for row between DuckDB and another engine (PostgreSQL, Spark): every
column equal, money to the last decimal, except the listed ratios (within one unit)."""

from __future__ import annotations

import datetime as dt
import decimal
import re

# Columns that models outside finance compute as a ratio through a double on DuckDB
# (`1.0 * a / b`, or a decimal divided by a decimal, is a double there) and then cast to a
# decimal. DuckDB rounds the double, PostgreSQL (and Spark) the exact quotient, so a quotient
# that ties at the next digit can end one unit of the column's last decimal apart. These, and only
# these, are compared to within that unit; every other column, every amount of money above
# all, must be equal. Finance computes its quotients exactly (macro `divide_rounded`); moving
# these ratios to it would let this list go.
ROUNDED_FROM_A_DOUBLE = frozenset(
    {
        ("fct_watch_sessions", "completion_ratio"),
        ("fct_campaign_delivery", "impressions_pacing_ratio"),
        ("fct_campaign_delivery", "budget_spent_ratio"),
    }
)
DECIMAL_TYPE = re.compile(r"(?:decimal|numeric)\(\s*\d+\s*,\s*(\d+)\s*\)")


def _normalise(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def tolerances_of(model: str, node: dict) -> list[decimal.Decimal | None]:
    """Per column: None to compare exactly, else the one unit a ratio may differ by."""
    tolerances: list[decimal.Decimal | None] = []
    for column in node["columns"].values():
        if (model, column["name"]) not in ROUNDED_FROM_A_DOUBLE:
            tolerances.append(None)
            continue
        scale = DECIMAL_TYPE.fullmatch(str(column.get("data_type", "")).strip().lower())
        assert scale, f"{model}.{column['name']} is listed as a ratio but is not a decimal(p, s)"
        tolerances.append(decimal.Decimal(1).scaleb(-int(scale.group(1))))
    return tolerances


def _split(row: tuple, tolerances: list[decimal.Decimal | None], where: str) -> tuple[tuple, tuple]:
    """(the exactly compared values, the ratios compared to within a unit) of a row."""
    exact, ratios = [], []
    for value, tolerance in zip(map(_normalise, row), tolerances, strict=True):
        # A double would make exact equality a matter of luck: the marts have none (their
        # contracts declare decimals), and a new one must be made a decimal or listed above.
        assert not isinstance(value, float), f"{where}: a double column, {value!r}"
        (exact if tolerance is None else ratios).append(value)
    return tuple(exact), tuple(ratios)


def _within(left: tuple, right: tuple, tolerances: list[decimal.Decimal]) -> bool:
    for a, b, unit in zip(left, right, tolerances, strict=True):
        if (a is None) != (b is None) or (a is not None and abs(a - b) > unit):
            return False
    return True


def same_rows(
    left: list[tuple],
    right: list[tuple],
    tolerances: list[decimal.Decimal | None],
    where: str,
    engine: str = "the other engine",
) -> str | None:
    """None when both sides hold the same rows: equal in every column, decimals to the last
    digit, except the listed ratios, which may differ by one unit of their last decimal."""
    groups: dict[tuple, list[list[tuple]]] = {}
    for side, rows in enumerate((left, right)):
        for row in rows:
            exact, ratios = _split(row, tolerances, where)
            groups.setdefault(exact, [[], []])[side].append(ratios)
    units = [t for t in tolerances if t is not None]
    for exact, (a, b) in groups.items():
        if len(a) != len(b):
            return f"row {exact}: {len(a)} on DuckDB, {len(b)} on {engine}"
        order = lambda ratios: [(v is None, v or 0) for v in ratios]  # noqa: E731
        for x, y in zip(sorted(a, key=order), sorted(b, key=order), strict=True):
            if not _within(x, y, units):
                return f"row {exact}: ratios {x} on DuckDB, {y} on {engine}"
    return None
