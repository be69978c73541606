"""`mediapulse diff`: what a pull request does to the data, model by model, against production.

After `mediapulse slim-ci` has built the changed models and their descendants into the CI
warehouse, every one of them is compared with its production relation, in the warehouse (SQL,
never rows pulled into Python): the schema (added, removed, retyped, likely renamed columns),
row counts, and a value diff keyed on the model's primary key (its contract's `primary_key`,
else a `unique` test, else `unique_combination_of_columns`): rows added, removed and changed,
the share of matched rows that changed per column, and up to five example rows. A model
without a usable key gets row counts and column profiles instead, and the report says why.
Keyed hashes (columns macro keyed_hash computes, and what passes them on) are not compared:
CI hashes personal data with a key of its own, never production's, so their values differ by
design; the report names them and says so.

Each modified model is then classified for the readers downstream: breaking when a model
built from it names a removed or changed column in its SQL (column-level lineage by name), or
an exposure reads it and its data changed; non-breaking when the change is only added columns
or no reader sees it; unknown when the diff could not tell. Nothing leaves the machine: the
queries run on the CI warehouse (DuckDB, production attached read-only) or the PostgreSQL
server the CI role reads.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.markdown import inert, markdown_table, write_summary
from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.engines.base import Capability, Engine
from mediapulse.engines.duckdb import duckdb_file, production_file
from mediapulse.jobs import prepare
from mediapulse.monitoring import history

PLAN_FILE = "slim-ci-plan.json"  # in target/: what slim CI modified and built, for this step
EXAMPLES = 5
# GitHub refuses a comment over 65,536 characters; the diff leaves room for the other reports
MAX_CHARS = 40_000
FLOAT_TYPES = re.compile(r"^(double|float|real)", re.IGNORECASE)
NUMERIC_TYPES = re.compile(
    r"^(tinyint|smallint|integer|int|bigint|hugeint|ubigint|uinteger|decimal|numeric|double"
    r"|float|real)",
    re.IGNORECASE,
)
WITHHELD = "(withheld)"  # the value of a personal column, in examples and profiles
# a double compared exactly would flag the last bits of a sum that ran in another order
FLOAT_TOLERANCE = 1e-9

Query = Callable[[str], list[tuple]]


@dataclass
class Schema:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: list[tuple[str, str, str]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)  # likely: (old, new)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.retyped or self.renamed)

    @property
    def gone(self) -> list[str]:
        """Columns a reader of production can no longer find."""
        return self.removed + [old for old, _ in self.renamed]


@dataclass
class ModelDiff:
    unique_id: str
    name: str
    modified: bool
    status: str = "compared"  # compared, new, not built, error
    rows_base: int | None = None
    rows_head: int | None = None
    schema: Schema = field(default_factory=Schema)
    key: list[str] | None = None
    keyless_reason: str | None = None
    added: int = 0
    removed: int = 0
    changed: int = 0
    matched: int = 0
    changed_by_column: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, tuple[dict, dict]] = field(default_factory=dict)
    profile_changed: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)  # keyed hashes (keyed_hash_columns)
    error: str | None = None
    readers: dict[str, list[str]] = field(default_factory=dict)  # model -> columns it names
    exposures: list[str] = field(default_factory=list)
    classification: str = ""
    seconds: float = 0.0

    @property
    def data_changed(self) -> bool:
        if self.status == "new":
            return True
        return bool(
            self.added or self.removed or self.changed or self.schema.gone
            or self.schema.retyped or self.profile_changed or self.rows_base != self.rows_head
        )  # fmt: skip

    @property
    def affected(self) -> list[str]:
        """Columns whose readers see a difference: gone, retyped, or with changed values."""
        return sorted(
            set(self.schema.gone) | {old for old, _, _ in self.schema.retyped}
            | {c for c, n in self.changed_by_column.items() if n} | set(self.profile_changed)
        )  # fmt: skip

    @property
    def rows_moved(self) -> bool:
        """Rows came or went: known on the key, or from the counts without one."""
        return bool(self.added or self.removed) or (
            not self.key and self.rows_base != self.rows_head
        )

    @property
    def shown(self) -> bool:
        """Worth a section of the report: the data or the schema changed, or no answer."""
        return self.data_changed or self.schema.changed or self.status in ("error", "not built")

    @property
    def impact(self) -> int:
        """Rows a reader sees differ: every row when a column went away."""
        if self.status == "new":
            return self.rows_head or 0
        if self.schema.gone or self.schema.retyped:
            return max(self.rows_base or 0, self.rows_head or 0)
        if self.key:
            return self.added + self.removed + self.changed
        if self.profile_changed:  # which rows changed is not known without a key
            return max(self.rows_base or 0, self.rows_head or 0)
        return abs((self.rows_head or 0) - (self.rows_base or 0))


# -- keys and lineage from the manifest (pure) ------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def primary_key(manifest: dict[str, Any], unique_id: str) -> list[str] | None:
    """The model's key: its contract's primary_key, else a `unique` test's column, else a
    `unique_combination_of_columns` test's columns (plain column names only)."""
    node = manifest["nodes"][unique_id]
    for constraint in node.get("constraints") or []:
        if constraint.get("type") == "primary_key" and constraint.get("columns"):
            return list(constraint["columns"])
    for name, column in (node.get("columns") or {}).items():
        if any(c.get("type") == "primary_key" for c in column.get("constraints") or []):
            return [name]
    single: list[list[str]] = []
    combined: list[list[str]] = []
    for child in manifest.get("child_map", {}).get(unique_id, []):
        test = manifest["nodes"].get(child) or {}
        meta = test.get("test_metadata") or {}
        if test.get("attached_node") not in (unique_id, None) or (test.get("config") or {}).get(
            "where"
        ):
            continue  # a test of another model, or of some rows only
        kwargs = meta.get("kwargs") or {}
        if meta.get("name") == "unique" and _IDENT.match(str(kwargs.get("column_name", ""))):
            single.append([kwargs["column_name"]])
        elif meta.get("name") == "unique_combination_of_columns":
            columns = kwargs.get("combination_of_columns") or []
            if columns and all(_IDENT.match(str(c)) for c in columns):
                combined.append(list(columns))
    found = sorted(single) + sorted(combined, key=len)
    return found[0] if found else None


_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_KEYED_HASH = re.compile(
    r"\{\{-?\s*keyed_hash\s*\(.*?\)\s*-?\}\}\s*(?:as\s+)?[\"`]?(\w+)", re.DOTALL | re.IGNORECASE
)
KEYED_HASH_NOTE = (
    "CI hashes personal data with a key of its own, never production's, so their values "
    "differ by design"
)


def keyed_hash_columns(
    manifest: dict[str, Any], unique_id: str, seen: dict[str, set[str]] | None = None
) -> set[str]:
    """Columns (lower-cased) whose values depend on the key personal data is hashed with: what
    the node's SQL computes with macro keyed_hash (`{{ keyed_hash(...) }} as name`), and a
    column of the same name as a parent's keyed hash (passed on)."""
    seen = {} if seen is None else seen
    if unique_id in seen:
        return seen[unique_id]
    seen[unique_id] = set()  # a cycle (none in a dbt DAG) ends here
    node = manifest.get("nodes", {}).get(unique_id) or {}
    found = {m.lower() for m in _KEYED_HASH.findall(node.get("raw_code") or "")}
    passed_on = set()
    for parent in (node.get("depends_on") or {}).get("nodes") or []:
        passed_on |= keyed_hash_columns(manifest, parent, seen)
    if passed_on:
        found |= passed_on & names_in_sql(node.get("compiled_code") or node.get("raw_code") or "")
    seen[unique_id] = found
    return found


def names_in_sql(sql: str) -> set[str]:
    """Every identifier a SQL text names, comments left out, lower-cased."""
    return {w.lower() for w in _WORDS.findall(_COMMENTS.sub(" ", sql))}


def readers_of(manifest: dict[str, Any], unique_id: str) -> tuple[dict[str, set[str]], list[str]]:
    """The models and snapshots built directly from ``unique_id`` with the identifiers their
    SQL names (a snapshot keeps every column: EVERY), and the exposures that read it (names)."""
    models: dict[str, set[str]] = {}
    exposures: list[str] = []
    for child in manifest.get("child_map", {}).get(unique_id, []):
        if child.startswith("model."):
            node = manifest["nodes"][child]
            models[child] = names_in_sql(node.get("compiled_code") or node.get("raw_code") or "")
        elif child.startswith("snapshot."):
            models[child] = EVERY
        elif child.startswith("exposure."):
            exposures.append(manifest["exposures"][child]["name"])
    return models, sorted(exposures)


EVERY = frozenset({"*"})  # a reader of every column


def reads(names: set[str] | frozenset[str], affected: set[str]) -> bool:
    """Whether a reader naming ``names`` reads any of the ``affected`` columns."""
    return bool(affected) and ("*" in names or bool(affected & names))


def compare_columns(base: list[tuple[str, str]], head: list[tuple[str, str]]) -> Schema:
    """Added, removed and retyped columns; a removed and an added column of the same type at
    the same position is a likely rename (pure)."""
    before = {n: (n, t) for n, t in base}
    after = {n: (n, t) for n, t in head}
    schema = Schema(
        added=[after[k][0] for k in after if k not in before],
        removed=[before[k][0] for k in before if k not in after],
        retyped=[
            (before[k][0], before[k][1], after[k][1])
            for k in before
            if k in after and before[k][1].lower() != after[k][1].lower()
        ],
    )
    base_pos = {n: i for i, (n, _) in enumerate(base)}
    head_pos = {n: i for i, (n, _) in enumerate(head)}
    types_before = dict(base)
    types_after = dict(head)
    for old in list(schema.removed):
        candidates = [
            new for new in schema.added
            if types_after[new].lower() == types_before[old].lower()
            and (head_pos[new] == base_pos[old] or _squashed(new) == _squashed(old))
        ]  # fmt: skip
        if len(candidates) == 1:
            schema.renamed.append((old, candidates[0]))
            schema.removed.remove(old)
            schema.added.remove(candidates[0])
    return schema


def _squashed(name: str) -> str:
    return name.replace("_", "").lower()


def classify(diff: ModelDiff, readers: dict[str, set[str]]) -> str:
    """breaking, non-breaking or unknown, for the readers of a modified model: ``readers``
    holds each model built from it with the identifiers its SQL names (pure)."""
    if diff.status in ("error", "not built"):
        return "unknown"
    if diff.status == "new":
        return "non-breaking"  # nobody read it before
    gone = {c.lower() for c in diff.schema.gone}
    if not diff.key and diff.profile_changed:
        affected = {c.lower() for c in diff.profile_changed} | gone
        if diff.exposures or any(reads(names, affected) for names in readers.values()):
            return "breaking"
        return "unknown"  # without a key, which rows changed is not known
    rows_moved = diff.rows_moved
    affected = {c.lower() for c in diff.affected}  # keyed: no profiles
    if diff.exposures and (affected or rows_moved):
        return "breaking"
    for names in readers.values():
        if rows_moved or reads(names, affected):
            return "breaking"
    return "non-breaking"


# -- the warehouse ----------------------------------------------------------------------------


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Warehouse:
    """The SQL a diff runs, on the CI target's engine: DuckDB (the CI file with production and
    the raw data attached read-only) or PostgreSQL (the target's database)."""

    def __init__(self, query: Query, catalogs: bool) -> None:
        self.query = query
        self.catalogs = catalogs  # relation names keep their database part (DuckDB)

    def relation(self, node: dict[str, Any]) -> str:
        parts = artifacts.unquoted_relation(node).split(".")
        return ".".join(_q(p) for p in (parts if self.catalogs else parts[-2:]))

    def columns(self, node: dict[str, Any]) -> list[tuple[str, str]] | None:
        """The relation's columns and types, None when it does not exist."""
        parts = artifacts.unquoted_relation(node).split(".")
        where = f"table_schema = {_lit(parts[-2])} and table_name = {_lit(parts[-1])}"
        if self.catalogs:
            where += f" and table_catalog = {_lit(parts[0])}"
        rows = self.query(
            "select column_name, data_type from information_schema.columns "
            f"where {where} order by ordinal_position"
        )
        return [(str(n), str(t)) for n, t in rows] or None


@contextmanager
def connect(engine: Engine, prod_warehouse: Path | None) -> Iterator[Warehouse]:
    project, target = engine.project, engine.target
    engine.require(Capability.DATA_DIFF, "diff")
    if engine.embedded:
        prod = prod_warehouse or production_file(project)
        prepare.check_duckdb_file(prod, "compare with production")
        with engine.connect("compare with production") as session:
            con = session.con
            # the bounds every DuckDB target has (docs/targets/duckdb.md, "Memory"): a big join
            # spills to disk
            limit = os.environ.get("MEDIAPULSE_DUCKDB_MEMORY_LIMIT") or "4GB"
            spill = os.environ.get("MEDIAPULSE_DUCKDB_TEMP_DIR")
            spill = f"{spill}/{target}" if spill else f"{duckdb_file(project, target)}.tmp"
            con.execute(f"set memory_limit = {_lit(limit)}; set temp_directory = {_lit(spill)}")
            try:
                con.execute(f"attach {_lit(str(prod))} as prod (read_only)")
                if project.raw_path.exists():  # the views of both read the raw data
                    con.execute(f"attach {_lit(str(project.raw_path))} as raw (read_only)")
            except duckdb.Error as exc:
                raise MediaPulseError(
                    f"cannot attach production {prod} or the raw data: {str(exc).splitlines()[0]}"
                ) from exc
            yield Warehouse(lambda sql: con.execute(sql).fetchall(), catalogs=True)
        return
    with engine.connect("compare with production") as session:
        session.con.set_session(readonly=True, autocommit=True)  # a server: each query on its own
        yield Warehouse(session.query, catalogs=False)


def _differs(column: str, before: str, after: str) -> str:
    """SQL true when the column's value differs between production (b) and the change (h)."""
    b, h = f"b.{_q(column)}", f"h.{_q(column)}"
    if before.lower() != after.lower():  # retyped
        if NUMERIC_TYPES.match(before) and NUMERIC_TYPES.match(after):  # 1.50 is 1.500000
            return _floats_differ(
                f"cast({b} as double precision)", f"cast({h} as double precision)"
            )
        return f"(cast({b} as varchar) is distinct from cast({h} as varchar))"
    if FLOAT_TYPES.match(before):
        return _floats_differ(b, h)
    return f"({b} is distinct from {h})"


def _floats_differ(b: str, h: str) -> str:
    # equal first: infinities; then a relative tolerance (absolute below 1)
    return (
        f"(case when {b} = {h} or ({b} is null and {h} is null) then false "
        f"when {b} is null or {h} is null then true "
        f"else abs({b} - {h}) > {FLOAT_TOLERANCE} * greatest(abs({b}), abs({h}), 1) end)"
    )


def _key_problem(wh: Warehouse, relation: str, key: list[str], side: str) -> str | None:
    keys = ", ".join(_q(k) for k in key)
    nulls = " or ".join(f"{_q(k)} is null" for k in key)
    [(duplicated, null_keys)] = wh.query(
        f"select (select count(*) from (select {keys} from {relation} group by {keys} "
        f"having count(*) > 1) d), (select count(*) from {relation} where {nulls})"
    )
    if duplicated or null_keys:
        what = []
        if duplicated:
            what.append(f"{duplicated} duplicated values")
        if null_keys:
            what.append(f"{null_keys} null values")
        return f"key ({', '.join(key)}) is not unique in {side}: {' and '.join(what)}"
    return None


def _value_diff(
    wh: Warehouse,
    diff: ModelDiff,
    base: str,
    head: str,
    compared: list[tuple[str, str, str]],
    withheld: set[str],
) -> None:
    key = diff.key or []
    on = " and ".join(f"b.{_q(k)} = h.{_q(k)}" for k in key)
    flags = [f"{_differs(c, t, r)} as d{i}" for i, (c, t, r) in enumerate(compared)]
    any_change = " or ".join(f"d{i}" for i in range(len(compared))) or "false"
    joined = (
        "select b.mp__in as in_base, h.mp__in as in_head, "
        + ", ".join([f"coalesce(b.{_q(k)}, h.{_q(k)}) as {_q(k)}" for k in key] + flags)
        + f" from (select true as mp__in, * from {base}) b"
        f" full outer join (select true as mp__in, * from {head}) h on {on}"
    )
    counts = [
        "count(*) filter (where in_head and in_base is null)",
        "count(*) filter (where in_base and in_head is null)",
        f"count(*) filter (where in_base and in_head and ({any_change}))",
        "count(*) filter (where in_base and in_head)",
    ] + [f"count(*) filter (where in_base and in_head and d{i})" for i in range(len(compared))]
    [row] = wh.query(f"with j as ({joined}) select {', '.join(counts)} from j")
    diff.added, diff.removed, diff.changed, diff.matched = (int(v) for v in row[:4])
    diff.changed_by_column = {c: int(n) for (c, _, _), n in zip(compared, row[4:], strict=True)}
    if not (diff.added or diff.removed or diff.changed):
        return
    shown = [(c, t, r) for c, t, r in compared if diff.changed_by_column[c]][:4]
    keys = ", ".join(f"coalesce(b.{_q(k)}, h.{_q(k)})" for k in key)
    values = [
        f"b.{_q(c)}, h.{_q(c)}" if c not in withheld else f"{_lit(WITHHELD)}, {_lit(WITHHELD)}"
        for c, _, _ in shown
    ]
    rows = wh.query(
        f"select {keys}, case when b.mp__in is null then 'added' when h.mp__in is null "
        f"then 'removed' else 'changed' end{''.join(', ' + v for v in values)}"
        f" from (select true as mp__in, * from {base}) b"
        f" full outer join (select true as mp__in, * from {head}) h on {on}"
        f" where b.mp__in is null or h.mp__in is null or {_any_differs(shown)}"
        f" order by {keys} limit {EXAMPLES}"
    )
    for values_row in rows:
        example: dict[str, Any] = {"key": values_row[: len(key)], "change": values_row[len(key)]}
        rest = values_row[len(key) + 1 :]
        example["columns"] = {
            c: (rest[2 * i], rest[2 * i + 1]) for i, (c, _, _) in enumerate(shown)
        }
        diff.examples.append(example)


def _any_differs(compared: list[tuple[str, str, str]]) -> str:
    return " or ".join(_differs(c, t, r) for c, t, r in compared) or "false"


def _profile(
    wh: Warehouse, relation: str, columns: list[tuple[str, str]], withheld: set[str]
) -> dict[str, dict]:
    parts = ["count(*)"]
    for name, kind in columns:
        c = _q(name)
        numeric = bool(NUMERIC_TYPES.match(kind))
        low = f"min({c})" if numeric else f"min(cast({c} as varchar))"
        high = f"max({c})" if numeric else f"max(cast({c} as varchar))"
        if name in withheld:
            low = high = _lit(WITHHELD)
        mean = f"avg(cast({c} as double precision))" if numeric else "null"
        parts += [f"count(*) - count({c})", f"count(distinct {c})", low, high, mean]
    [row] = wh.query(f"select {', '.join(parts)} from {relation}")
    profiles = {}
    for i, (name, _) in enumerate(columns):
        nulls, distinct, low, high, mean = row[1 + 5 * i : 6 + 5 * i]
        profiles[name] = {
            "nulls": nulls, "distinct": distinct, "min": low, "max": high,
            "mean": None if mean is None else round(float(mean), 6),
        }  # fmt: skip
    return profiles


def diff_model(
    wh: Warehouse, manifest: dict, production: dict, unique_id: str, modified: bool
) -> ModelDiff:
    node = manifest["nodes"][unique_id]
    diff = ModelDiff(unique_id, node_label(node), modified)
    started = time.perf_counter()
    try:
        _diff_model(wh, manifest, production, node, diff)
    except MediaPulseError:
        raise
    except Exception as exc:  # the engine's error, for the summary: one line
        diff.status = "error"
        diff.error = " ".join(str(exc).split())[:500] or type(exc).__name__
    readers, diff.exposures = readers_of(manifest, unique_id)
    affected = {c.lower() for c in diff.affected}
    diff.readers = dict(
        sorted(
            (
                node_label(manifest["nodes"][uid]),
                [c for c in diff.affected if "*" in names or c.lower() in names],
            )
            for uid, names in readers.items()
            if diff.rows_moved or reads(names, affected)
        )
    )
    diff.classification = classify(diff, readers)
    diff.seconds = time.perf_counter() - started
    return diff


def personal_columns(node: dict[str, Any], columns: list[str]) -> set[str]:
    """Columns whose values the report never shows (a PR comment is read on GitHub): a hash
    of personal data (`*_hash`), or a column documented as personal (`meta: {personal: true}`,
    or a description that starts with "Personal")."""
    documented = node.get("columns") or {}
    found = set()
    for name in columns:
        column = documented.get(name) or {}
        personal = (column.get("meta") or {}).get("personal") or str(
            column.get("description") or ""
        ).startswith("Personal")
        if personal or name.lower().endswith("_hash"):
            found.add(name)
    return found


def node_label(node: dict[str, Any]) -> str:
    version = node.get("version")
    return node["name"] if version is None else f"{node['name']}_v{version}"


def _diff_model(
    wh: Warehouse, manifest: dict, production: dict, node: dict, diff: ModelDiff
) -> None:
    head = wh.relation(node)
    head_columns = wh.columns(node)
    if head_columns is None:
        diff.status = "not built"
        return
    [(diff.rows_head,)] = wh.query(f"select count(*) from {head}")
    prod_node = production.get("nodes", {}).get(diff.unique_id)
    base_columns = wh.columns(prod_node) if prod_node else None
    if prod_node is None or base_columns is None:
        diff.status = "new"
        return
    base = wh.relation(prod_node)
    [(diff.rows_base,)] = wh.query(f"select count(*) from {base}")
    diff.schema = compare_columns(base_columns, head_columns)
    head_types = dict(head_columns)
    retyped = {old for old, _, _ in diff.schema.retyped}
    withheld = personal_columns(node, [n for n, _ in head_columns])
    keyed = keyed_hash_columns(manifest, diff.unique_id)
    diff.not_compared = [n for n, _ in base_columns if n in head_types and n.lower() in keyed]
    common = [(n, t) for n, t in base_columns if n in head_types and n not in diff.not_compared]
    key = primary_key(manifest, diff.unique_id)
    if key is None:
        diff.keyless_reason = "no primary key: no contract primary_key or unique test"
    elif set(key) & set(diff.not_compared):
        diff.keyless_reason = f"key ({', '.join(key)}) is a keyed hash: {KEYED_HASH_NOTE}"
    elif not all(k in head_types and k in dict(base_columns) for k in key):
        diff.keyless_reason = f"key ({', '.join(key)}) is not a column on both sides"
    elif set(key) & retyped:
        diff.keyless_reason = f"key ({', '.join(key)}) changed type"
    else:
        problem = _key_problem(wh, base, key, "production") or _key_problem(
            wh, head, key, "this change"
        )
        if problem:
            diff.keyless_reason = problem
        else:
            diff.key = key
    if diff.key:
        compared = [(n, t, head_types[n]) for n, t in common if n not in key]
        _value_diff(wh, diff, base, head, compared, withheld)
        return
    before = _profile(wh, base, common, withheld)
    after = _profile(wh, head, [(n, head_types[n]) for n, _ in common], withheld)
    diff.profiles = {c: (before[c], after[c]) for c, _ in common}
    diff.profile_changed = [c for c, _ in common if before[c] != after[c]]


# -- the report -------------------------------------------------------------------------------


def _share(n: int, of: int) -> str:
    return f"{n} ({100 * n / of:.1f} %)" if of else str(n)


def _value(value: Any) -> str:
    """A value from the data, cut short, as inert Markdown (the PR comment is read on GitHub,
    and the data is not ours); NULL is ours, outside code, so no text reads as it."""
    if value is None:
        return "NULL"
    text = str(value)
    return inert(text if len(text) <= 40 else text[:37] + "...")


def render_model(diff: ModelDiff) -> str:
    kind = "modified" if diff.modified else "downstream"
    verdict = f", **{diff.classification}**" if diff.modified else ""
    lines = [f"### `{diff.name}` ({kind}{verdict})", ""]
    if diff.status == "error":
        # the engine's message can quote a value
        return "\n".join([*lines, f"- **diff failed**: {inert(diff.error)}", ""])
    if diff.status == "not built":
        return "\n".join([*lines, "- not built in CI (its build failed or was skipped)", ""])
    if diff.status == "new":
        return "\n".join([*lines, f"- new: not in production; {diff.rows_head} rows", ""])
    lines.append(f"- rows: {diff.rows_base} in production, {diff.rows_head} with this change")
    s = diff.schema
    if s.changed:
        parts = [f"added {', '.join(s.added)}"] if s.added else []
        parts += [f"removed {', '.join(s.removed)}"] if s.removed else []
        parts += [f"renamed (likely) {o} → {n}" for o, n in s.renamed]
        parts += [f"retyped {c} {a} → {b}" for c, a, b in s.retyped]
        lines.append(f"- schema: {'; '.join(parts)}")
    else:
        lines.append("- schema: unchanged")
    if diff.not_compared:
        lines.append(
            f"- not compared: {', '.join(diff.not_compared)} (keyed hashes: {KEYED_HASH_NOTE})"
        )
    if diff.key:
        lines.append(
            f"- values on key ({', '.join(diff.key)}): {diff.added} added, {diff.removed} "
            f"removed, {_share(diff.changed, diff.matched)} of {diff.matched} matched rows changed"
        )
        changed = [(c, n) for c, n in diff.changed_by_column.items() if n]
        if changed:
            lines.append(
                "- changed columns: "
                + ", ".join(f"{c} {_share(n, diff.matched)}" for c, n in changed)
            )
        if diff.examples:
            shown = list(diff.examples[0]["columns"])
            headers = ["key", "change", *(f"{c} (before → after)" for c in shown)]
            rows = [
                [", ".join(_value(v) for v in e["key"]), e["change"]]
                + [f"{_value(b)} → {_value(a)}" for b, a in e["columns"].values()]
                for e in diff.examples
            ]
            lines += ["", markdown_table(headers, rows), ""]
    else:
        lines.append(f"- no value diff ({diff.keyless_reason}): column profiles compared instead")
        if diff.profile_changed:
            rows = [
                [c, *(_profile_text(p) for p in diff.profiles[c])] for c in diff.profile_changed
            ]
            lines += ["", markdown_table(["column", "production", "this change"], rows), ""]
        else:
            lines.append("- profiles: unchanged")
    if diff.readers:
        lines.append(
            "- read downstream by: "
            + "; ".join(f"{m} ({', '.join(c) or 'its rows'})" for m, c in diff.readers.items())
        )
    if diff.exposures and diff.data_changed:
        lines.append(f"- exposures whose data changes: {', '.join(diff.exposures)}")
    return "\n".join([*lines, ""])


def _profile_text(profile: dict) -> str:
    """Counts and the mean are ours; min and max are values from the data."""
    return ", ".join(
        f"{k} {_value(v) if k in ('min', 'max') or v is None else v}" for k, v in profile.items()
    )


def render(diffs: list[ModelDiff], max_chars: int = MAX_CHARS, notes: Sequence[str] = ()) -> str:
    """The PR comment's section: a headline, then one section per model with changes, largest
    impact first (failed diffs before all), cut with counts at ``max_chars``."""
    shown = [d for d in diffs if d.shown]
    same = [d.name for d in diffs if not d.shown]
    unbuilt = [d.name for d in diffs if d.status == "not built"]
    errors = [d.name for d in diffs if d.status == "error"]
    exposures = sorted({e for d in diffs if d.data_changed for e in d.exposures})
    head = ["## Data diff against production", ""]
    head += [f"- notice: {n}" for n in notes]
    head.append(
        f"- {len(diffs)} models compared: {len(shown) - len(unbuilt) - len(errors)} changed, "
        f"{len(same)} unchanged"
        + (f" ({_names(same)})" if same else "")
        + (f", {len(unbuilt)} not built in CI ({_names(unbuilt)})" if unbuilt else "")
    )
    for verdict in ("breaking", "unknown", "non-breaking"):
        names = [d.name for d in diffs if d.modified and d.classification == verdict]
        if names:
            head.append(f"- {verdict}: {_names(names)}")
    head.append(f"- exposures whose data changes: {_names(exposures) or 'none'}")
    if errors:
        head.append(f"- **{len(errors)} diff checks failed**: {_names(errors)}")
    text = "\n".join(head) + "\n\n"
    ordered = sorted(shown, key=lambda d: (d.status != "error", -d.impact, d.name))
    for i, diff in enumerate(ordered):
        section = render_model(diff) + "\n"
        if len(text) + len(section) > max_chars - 400:
            rest = ordered[i:]
            text += (
                f"_{len(rest)} more changed models not shown (the comment's size limit): "
                f"{_clip(', '.join(d.name for d in rest), 200)}; "
                f"{sum(d.impact for d in rest)} rows affected among them._\n"
            )
            break
        text += section
    return text


def _names(names: list[str]) -> str:
    return _clip(", ".join(names), 1000)


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def as_json(diffs: list[ModelDiff]) -> list[dict[str, Any]]:
    return [{**asdict(d), "data_changed": d.data_changed, "impact": d.impact} for d in diffs]


# -- the command ------------------------------------------------------------------------------


def save_plan(
    project: Project,
    state: Path | None,
    modified: list[str],
    built: list[str],
    prod_warehouse: str | None = None,
    stopped: str | None = None,
) -> None:
    """What slim CI compared against and built, for `mediapulse diff` after it: the state, the
    production file it deferred to, or why it stopped before building."""
    record = {
        "state": str(state) if state else None, "modified": modified, "selected": built,
        "prod_warehouse": prod_warehouse, "stopped": stopped,
    }  # fmt: skip
    project.target_dir.mkdir(parents=True, exist_ok=True)  # a fresh runner's first dbt step
    (project.target_dir / PLAN_FILE).write_text(json.dumps(record, indent=1))


def run_diff(
    engine: Engine,
    state_dir: Path | None,
    prod_warehouse: Path | None = None,
    summary: Path | None = None,
    max_chars: int = MAX_CHARS,
    json_out: Path | None = None,
) -> int:
    """Compare every model slim CI built with production; 1 when a diff check failed."""
    try:
        diffs, notes = _run(engine, state_dir, prod_warehouse)
    except MediaPulseError as exc:
        write_summary(f"## Data diff against production: failed\n\n- {exc}\n", summary)
        raise
    if diffs is None:
        report = "## Data diff against production\n\n" + "".join(f"- {n}\n" for n in notes)
        code = 0
    else:
        report = render(diffs, max_chars, notes)
        code = 1 if any(d.status == "error" for d in diffs) else 0
    print(report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(as_json(diffs or []), indent=1, default=str))
    written = write_summary(report, summary)
    if written:
        print(f"summary written to {written}")
    return code


def _run(
    engine: Engine, state_dir: Path | None, prod_warehouse: Path | None
) -> tuple[list[ModelDiff] | None, list[str]]:
    project = engine.project
    plan_path = project.target_dir / PLAN_FILE
    if not plan_path.is_file():
        raise MediaPulseError(
            f"no slim CI plan at {plan_path}: run `mediapulse slim-ci` first, in this checkout"
        )
    plan = artifacts.load_json(plan_path, "slim CI plan")
    if plan.get("stopped"):
        return None, [f"slim CI stopped before building ({plan['stopped']}): nothing to compare"]
    if not plan.get("state"):
        return None, ["no production state: slim CI built everything, there is nothing to compare"]
    state = state_dir or Path(plan["state"])
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    production = artifacts.load_json(state / "manifest.json", "production manifest")
    modified = set(plan["modified"])
    models = [u for u in plan["selected"] if u.startswith("model.")]
    if not models:
        return None, ["the change builds no model: no data to compare"]
    models = [u for u in models if u in manifest["nodes"]]
    ephemeral = [
        u for u in models if manifest["nodes"][u]["config"].get("materialized") == "ephemeral"
    ]
    notes = (
        [f"ephemeral, compared through its readers: {', '.join(ephemeral)}"] if ephemeral else []
    )
    # DuckDB: production's monitoring views are in production's history file, over another
    # history than the CI run's own (slim CI builds them over that): nothing to compare with
    own_history = [
        u for u in models
        if engine.embedded
        and manifest["nodes"][u].get("database") == history.CATALOG
    ]  # fmt: skip
    if own_history:
        names = _names([node_label(manifest["nodes"][u]) for u in own_history])
        notes.append(
            "views over the run history, built and tested over this CI run's own history, not "
            f"compared with production's (another history): {names}"
        )
    models = [u for u in models if u not in ephemeral and u not in own_history]
    if not models and own_history:
        return None, notes
    if prod_warehouse is None and plan.get("prod_warehouse"):  # the file slim CI deferred to
        prod_warehouse = project.root / plan["prod_warehouse"]
    with connect(engine, prod_warehouse) as wh:
        diffs = [diff_model(wh, manifest, production, u, u in modified) for u in models]
    hashes = [f"{d.name}.{c}" for d in diffs for c in d.not_compared]
    if hashes:
        notes.append(f"keyed hashes not compared ({KEYED_HASH_NOTE}): {', '.join(hashes)}")
    return diffs, notes
