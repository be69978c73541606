"""The data diff a pull request's review shows (`mediapulse diff`, after `mediapulse slim-ci`).

Scripted pull requests against a production built by `mediapulse nightly`, each with an answer
the test computes on its own from production: a rounding change, a dropped column a downstream
model reads, an added column, a filter that removes one content type. Each diff runs in a
network namespace without a network (netsandbox.py), which records any attempt to leave.
Above them, the diff's SQL on hand-made DuckDB tables: exact counts, a key that is not unique,
a new model, a relation that cannot be read, the size limit of a PR comment.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mediapulse.ci import datadiff
from mediapulse.ci.summarize import COMMENT_LIMIT, combine
from mediapulse.cli.main import main
from mediapulse.core.project import Project
from mediapulse.dbt import pii
from mediapulse.engines.duckdb import production_file

from ..conftest import clone_built
from ..support import netsandbox, rendered

BIN = Path(sys.executable).parent

# -- the SQL, on hand-made tables -------------------------------------------------------------


def _node(name: str, schema: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "resource_type": "model", "relation_name": f'"memory"."{schema}"."{name}"',
        "columns": {}, "config": {"materialized": "table"}, **extra,
    }  # fmt: skip


def _unique_test(model: str, column: str) -> dict[str, Any]:
    return {
        "resource_type": "test", "attached_node": model, "config": {},
        "test_metadata": {"name": "unique", "kwargs": {"column_name": column}},
    }  # fmt: skip


@pytest.fixture
def warehouse() -> tuple[duckdb.DuckDBPyConnection, datadiff.Warehouse]:
    con = duckdb.connect()
    con.execute("create schema prod; create schema ci")
    return con, datadiff.Warehouse(lambda sql: con.execute(sql).fetchall(), True)


def _manifests(key_test: bool = True) -> tuple[dict, dict]:
    uid = "model.mediapulse.t"
    head = {
        "nodes": {uid: _node("t", "ci")}, "child_map": {uid: []}, "exposures": {},
    }  # fmt: skip
    if key_test:
        head["nodes"]["test.mediapulse.unique_t_id"] = _unique_test(uid, "id")
        head["child_map"][uid] = ["test.mediapulse.unique_t_id"]
    return head, {"nodes": {uid: _node("t", "prod")}}


def _diff(wh: datadiff.Warehouse) -> datadiff.ModelDiff:
    """The diff of model `t`, keyed on `id` by a unique test: ci.t against prod.t."""
    head, production = _manifests()
    return datadiff.diff_model(wh, head, production, "model.mediapulse.t", modified=True)


def test_the_value_diff_counts_added_removed_and_changed_rows_exactly(warehouse) -> None:
    con, wh = warehouse
    con.execute("create table prod.t (id int, amount decimal(18, 6), ratio double, label text)")
    con.execute("create table ci.t (id int, amount decimal(18, 6), ratio double, label text)")
    con.execute(
        "insert into prod.t select i, i * 1.5, i / 3, 'x' || i from range(1, 11) r(i);"
        "insert into ci.t select * from prod.t where id <> 1;"
        "insert into ci.t values (11, 1, 1, 'new');"
        "update ci.t set amount = amount + 0.000001 where id = 2;"  # a changed amount
        "update ci.t set ratio = ratio + 1e-13 where id = 3;"  # a double's last bits: same
        "update ci.t set label = null where id = 4;"  # a value that became null
    )
    diff = _diff(wh)
    assert (diff.status, diff.key, diff.rows_base, diff.rows_head) == ("compared", ["id"], 10, 10)
    assert (diff.added, diff.removed, diff.changed, diff.matched) == (1, 1, 2, 9)
    assert diff.changed_by_column == {"amount": 1, "ratio": 0, "label": 1}
    assert [(e["key"], e["change"]) for e in diff.examples] == [
        ((1,), "removed"), ((2,), "changed"), ((4,), "changed"), ((11,), "added"),
    ]  # fmt: skip
    before, after = diff.examples[1]["columns"]["amount"]
    assert after - before == Decimal("0.000001")
    text = datadiff.render_model(diff)
    assert "1 added, 1 removed, 2 (22.2 %) of 9 matched rows changed" in text
    assert "amount 1 (11.1 %), label 1 (11.1 %)" in text


def test_a_key_that_is_not_unique_is_reported_and_profiles_are_compared(warehouse) -> None:
    con, wh = warehouse
    con.execute("create table prod.t as select i as id, i % 3 as v from range(6) r(i)")
    con.execute("create table ci.t as select * from prod.t union all select 5, 9")
    diff = _diff(wh)
    assert diff.key is None and diff.added == diff.removed == diff.changed == 0
    assert diff.keyless_reason == "key (id) is not unique in this change: 1 duplicated values"
    assert diff.profile_changed == ["id", "v"]
    assert diff.profiles["v"][0]["max"] == 2 and diff.profiles["v"][1]["max"] == 9
    assert "no value diff (key (id) is not unique in this change" in datadiff.render_model(diff)


def test_a_new_model_is_reported_as_new_with_its_rows(warehouse) -> None:
    con, wh = warehouse
    con.execute("create table ci.t as select * from range(7) r(id)")
    head, _ = _manifests()
    diff = datadiff.diff_model(wh, head, {"nodes": {}}, "model.mediapulse.t", modified=True)
    assert (diff.status, diff.rows_head, diff.classification) == ("new", 7, "non-breaking")
    assert "new: not in production; 7 rows" in datadiff.render_model(diff)


def test_a_relation_that_cannot_be_read_is_a_failed_check_not_a_result(warehouse) -> None:
    con, wh = warehouse
    con.execute("create table prod.t as select 1 as id; create table prod.gone as select 1 as x")
    con.execute("create view ci.t as select x as id from prod.gone; drop table prod.gone")
    diff = _diff(wh)
    assert diff.status == "error" and "gone" in (diff.error or ""), diff.error
    assert diff.classification == "unknown"
    report = datadiff.render([diff])
    assert "**1 diff checks failed**: t" in report and "**diff failed**: " in report


def test_retyped_numbers_are_compared_by_value_and_personal_values_are_withheld(
    warehouse,
) -> None:
    con, wh = warehouse
    con.execute(
        "create table prod.t (id int, amount decimal(18, 6), ratio double, email_hash text);"
        "insert into prod.t values (1, 1.5, 'inf', 'aa'), (2, 2.25, 0.5, 'bb'), (3, 3, 1, 'cc');"
        "create table ci.t (id int, amount decimal(18, 2), ratio double, email_hash text);"
        "insert into ci.t values (1, 1.5, 'inf', 'aa'), (2, 2.25, 0.5, 'zz'), (3, 3.01, 1, 'cc')"
    )
    diff = _diff(wh)
    assert diff.schema.retyped == [("amount", "DECIMAL(18,6)", "DECIMAL(18,2)")]
    # 1.500000 is 1.50 and infinity is infinity: only id 3's amount and id 2's hash changed
    assert diff.changed_by_column == {"amount": 1, "ratio": 0, "email_hash": 1}
    values = {e["key"]: e["columns"] for e in diff.examples}
    assert values[(2,)]["email_hash"] == ("(withheld)", "(withheld)")
    assert "zz" not in datadiff.render([diff]) and "bb" not in datadiff.render([diff])


def test_a_retyped_or_null_key_is_no_key(warehouse) -> None:
    con, wh = warehouse
    con.execute("create table prod.t as select i as id, i as v from range(3) r(i)")
    con.execute("create table ci.t as select cast(i as text) as id, i as v from range(3) r(i)")
    diff = _diff(wh)
    assert diff.key is None and diff.keyless_reason == "key (id) changed type"
    con.execute(
        "drop table ci.t; create table ci.t as select * from prod.t union all select null, 3"
    )
    diff = _diff(wh)
    assert diff.keyless_reason == "key (id) is not unique in this change: 1 null values"
    assert diff.rows_moved and diff.profile_changed


def test_who_reads_a_change_decides_whether_it_breaks() -> None:
    def diff(**fields: Any) -> datadiff.ModelDiff:
        d = datadiff.ModelDiff("model.p.m", "m", modified=True, rows_base=10, rows_head=10)
        for name, value in fields.items():
            setattr(d, name, value)
        return d

    reader = {"model.p.child": {"select", "id", "amount", "from"}}
    keyed = {"key": ["id"], "matched": 10}
    changed = diff(**keyed, changed=2, changed_by_column={"amount": 2, "label": 0})
    assert datadiff.classify(changed, reader) == "breaking"
    unread = diff(**keyed, changed=2, changed_by_column={"amount": 0, "label": 2})
    assert datadiff.classify(unread, reader) == "non-breaking"
    assert datadiff.classify(unread, {"snapshot.p.s": datadiff.EVERY}) == "breaking"
    assert datadiff.classify(unread, {}) == "non-breaking"
    assert datadiff.classify(diff(**keyed, exposures=["board"], changed=1,
                                  changed_by_column={"label": 1}), {}) == "breaking"  # fmt: skip
    added = diff(**keyed, schema=datadiff.Schema(added=["new"]))
    assert datadiff.classify(added, reader) == "non-breaking" and added.shown
    # no key: a changed count moves rows for every reader; changed profiles nobody names: unknown
    fewer = diff(rows_head=9)
    assert fewer.rows_moved and datadiff.classify(fewer, reader) == "breaking"
    assert datadiff.classify(diff(profile_changed=["label"]), reader) == "unknown"
    assert datadiff.classify(diff(status="not built"), reader) == "unknown"


def test_the_key_comes_from_the_contract_then_unique_tests() -> None:
    uid = "model.p.m"
    manifest: dict[str, Any] = {
        "nodes": {
            uid: _node("m", "s", columns={"a": {"constraints": [{"type": "not_null"}]}}),
            "test.p.u_b": _unique_test(uid, "b"),
            "test.p.u_a_where": {**_unique_test(uid, "a"), "config": {"where": "a > 0"}},
            "test.p.combo": {
                "resource_type": "test", "attached_node": uid, "config": {},
                "test_metadata": {"name": "unique_combination_of_columns",
                                  "kwargs": {"combination_of_columns": ["a", "c"]}},
            },
        },
        "child_map": {uid: ["test.p.u_a_where", "test.p.combo", "test.p.u_b"]},
    }  # fmt: skip
    assert datadiff.primary_key(manifest, uid) == ["b"]  # a `where`-scoped test is no key
    del manifest["nodes"]["test.p.u_b"]
    assert datadiff.primary_key(manifest, uid) == ["a", "c"]
    manifest["nodes"][uid]["columns"]["d"] = {"constraints": [{"type": "primary_key"}]}
    assert datadiff.primary_key(manifest, uid) == ["d"]
    manifest["nodes"][uid]["constraints"] = [{"type": "primary_key", "columns": ["a", "b"]}]
    assert datadiff.primary_key(manifest, uid) == ["a", "b"]


def test_a_likely_rename_is_named_and_other_columns_are_added_or_removed() -> None:
    schema = datadiff.compare_columns(
        [("user_id", "BIGINT"), ("plan", "VARCHAR"), ("n", "INTEGER")],
        [("userId", "BIGINT"), ("plan", "VARCHAR"), ("n", "BIGINT"), ("extra", "DATE")],
    )
    assert schema.renamed == [("user_id", "userId")] and schema.added == ["extra"]
    assert schema.removed == [] and schema.retyped == [("n", "INTEGER", "BIGINT")]
    assert schema.gone == ["user_id"]
    case_only = datadiff.compare_columns([("Title", "text")], [("title", "text")])
    assert case_only.renamed == [("Title", "title")]


def test_a_big_diff_stays_under_the_comment_limit_largest_impact_first() -> None:
    diffs = []
    for i in range(1, 401):
        d = datadiff.ModelDiff(f"model.p.m{i}", f"model_{i:03d}", modified=False)
        d.rows_base = d.rows_head = 10_000
        d.key, d.matched, d.changed = ["id"], 10_000, i
        d.changed_by_column = {f"column_{c}": i for c in range(30)}
        diffs.append(d)
    text = datadiff.render(diffs, max_chars=20_000)
    assert len(text) <= 20_000
    assert text.index("model_400") < text.index("model_399")  # largest first
    shown = text.count("### `")
    assert 0 < shown < 400
    assert f"_{400 - shown} more changed models not shown (the comment's size limit)" in text
    assert f"{sum(range(1, 401 - shown))} rows affected among them" in text


def test_the_combined_comment_is_cut_at_githubs_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.md"
    big.write_text("line\n" * 30_000)
    text = combine("MediaPulse PR checks", [tmp_path / "slim-ci.md", big])
    assert len(text) <= COMMENT_LIMIT and "Cut here at GitHub's comment limit" in text


# what a campaign name, a title or any other value can hold: each would notify someone, link,
# show an image, open raw HTML, hide the rest of the comment, or break the table (each < 40
# characters, so none is cut short); every one has "evil" in it, to find it in the rendering
HOSTILE = [
    "@mediapulse/oncall evil", "[click](https://evil.example)",
    "![x](https://evil.example/x.png)", "<!-- evil", "evil -->", "</details> evil",
    "<img src=x> evil", "`evil`", "``evil` ```", "evil | pipe", "evil\\", "evil\nline",
    "evil\r\n# heading", "evil\r> quote", "# evil", "> evil", "www.evil.example", "#27 evil",
    "*evil* _x_", "<script>evil()</script>", "&lt;evil&gt; &#64;x", " evil ", "\\|evil",
]  # fmt: skip


def _as_shown(value: str) -> str:
    """What a reader must see of a value: itself, each line break shown as ⏎."""
    return value.replace("\r\n", "⏎").replace("\r", "⏎").replace("\n", "⏎")


def test_data_values_reach_the_pr_comment_inert(warehouse, tmp_path: Path) -> None:
    con, wh = warehouse
    n = len(HOSTILE)
    rows = [(HOSTILE[i], HOSTILE[(i + 5) % n], HOSTILE[(i + 10) % n]) for i in range(5)]
    changed = [
        (k, HOSTILE[(i + 15) % n], HOSTILE[(i + 20) % n]) for i, (k, _, _) in enumerate(rows)
    ]
    for schema, values in (("prod", rows), ("ci", changed)):
        con.execute(f"create table {schema}.t (id text, campaign text, title text)")
        con.executemany(f"insert into {schema}.t values (?, ?, ?)", values)
    # a model without a key: its profiles' min and max are values too
    columns = ", ".join(f"c{j} text" for j in range(n))
    for schema, shift in (("prod", 0), ("ci", 1)):
        con.execute(f"create table {schema}.u ({columns})")
        con.execute(f"insert into {schema}.u values ({', '.join('?' * n)})",
                    [HOSTILE[(j + shift) % n] for j in range(n)])  # fmt: skip
    # an engine error quoting a value
    con.execute("create table prod.v as select 1 as id")
    con.execute(f"create view ci.v as select cast({datadiff._lit(HOSTILE[0])} as int) as id")
    head, production = _manifests()
    for name in ("u", "v"):
        head["nodes"][f"model.mediapulse.{name}"] = _node(name, "ci")
        head["child_map"][f"model.mediapulse.{name}"] = []
        production["nodes"][f"model.mediapulse.{name}"] = _node(name, "prod")
    head["nodes"]["test.mediapulse.unique_v_id"] = _unique_test("model.mediapulse.v", "id")
    head["child_map"]["model.mediapulse.v"] = ["test.mediapulse.unique_v_id"]
    diffs = [
        datadiff.diff_model(wh, head, production, f"model.mediapulse.{name}", modified=True)
        for name in ("t", "u", "v")
    ]
    assert [d.status for d in diffs] == ["compared", "compared", "error"]
    report = tmp_path / "data-diff.md"
    report.write_text(datadiff.render(diffs))
    seen = rendered.render(combine("MediaPulse PR checks", [report]))

    outside = seen.text_outside_code()
    assert "evil" not in outside and "@" not in outside, outside
    assert set(seen.tags) <= {
        "h1", "h2", "h3", "p", "ul", "li", "strong", "em", "code",
        "table", "thead", "tbody", "tr", "th", "td",
    }, sorted(set(seen.tags))  # fmt: skip
    assert seen.comments == [" mediapulse-ci-report "]  # the marker, and no other
    assert [seen.tags.count(h) for h in ("h1", "h2", "h3")] == [1, 1, 3]
    examples, profiles = seen.tables
    assert [[c.codes for c in row[:2]] for row in examples[1:]] == [
        [[_as_shown(k)], []] for k, _, _ in sorted(rows)
    ]  # every key in one code span; `change` is ours
    before = {k: (c, t) for k, c, t in rows}
    after = {k: (c, t) for k, c, t in changed}
    for key, row in zip(sorted(before), examples[1:], strict=True):
        assert len(row) == len(examples[0]) == 4
        assert [c.codes for c in row[2:]] == [
            [_as_shown(before[key][i]), _as_shown(after[key][i])] for i in (0, 1)
        ]
    assert len(profiles) == 1 + n
    for j, row in enumerate(profiles[1:]):
        assert len(row) == 3 and row[0].text == f"c{j}"
        low_high = [cell.codes for cell in row[1:]]  # min and max; the counts are ours
        assert low_high == [[_as_shown(HOSTILE[(j + s) % n])] * 2 for s in (0, 1)], row
    assert any(HOSTILE[0] in code for code in seen.codes)  # the engine's error, in code


# -- scripted pull requests against a real production -------------------------------------


def _count(database: Path, sql: str) -> int:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def _edit(project: Project, relative: str, old: str, new: str) -> None:
    path = project.root / relative
    text = path.read_text()
    assert old in text, (relative, old)
    path.write_text(text.replace(old, new, 1))


def _pull_request(after_nightly: Project, tmp_path: Path, edit: Callable[[Project], None]):
    """Slim CI of the change in a copy of production's checkout, then the diff, offline."""
    project = clone_built(after_nightly, tmp_path / "project")
    edit(project)
    state = project.root / "state"
    out = tmp_path / "out"
    # a test of the change that fails, fails slim CI; the diff still runs, on what was built
    main([
        "--project-dir", str(project.root), "slim-ci", "--target", "ci", "--state", str(state),
        "--summary", str(out / "slim-ci.md"),
    ])  # fmt: skip
    problem = netsandbox.unavailable()
    if problem is not None:
        pytest.skip(f"no network sandbox: {problem}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAPULSE_")}
    outcome = netsandbox.run(
        [str(BIN / "mediapulse"), "--project-dir", str(project.root), "diff", "--target", "ci",
         "--summary", str(out / "data-diff.md"), "--json", str(out / "data-diff.json")],
        cwd=project.root, env=env, timeout_s=300,
    )  # fmt: skip
    assert not outcome.attempts, f"the diff tried to leave: {outcome.describe_attempts()}"
    diffs = {d["name"]: d for d in json.loads((out / "data-diff.json").read_text())}
    return project, outcome, diffs, (out / "data-diff.md").read_text()


def _prod(project: Project) -> Path:
    return production_file(project)


@pytest.mark.dbt
def test_rounding_revenue_changes_exactly_the_rows_an_exposure_shows(
    after_nightly: Project, tmp_path: Path
) -> None:
    old = "cast(subscription_revenue_usd as decimal(18, 6)) as subscription_revenue_usd,"
    new = "cast(round(subscription_revenue_usd, 2) as decimal(18, 6)) as subscription_revenue_usd,"
    project, outcome, diffs, report = _pull_request(
        after_nightly, tmp_path,
        lambda p: _edit(p, "models/marts/finance/revenue_by_content.sql", old, new),
    )  # fmt: skip
    assert outcome.returncode == 0, outcome.output[-3000:]
    expected = _count(
        _prod(project),
        "select count(*) from marts.revenue_by_content "
        "where subscription_revenue_usd <> round(subscription_revenue_usd, 2)",
    )
    rows = _count(_prod(project), "select count(*) from marts.revenue_by_content")
    assert 0 < expected <= rows
    diff = diffs["revenue_by_content"]
    assert diff["modified"] and diff["key"] == ["content_revenue_id"]
    assert (diff["added"], diff["removed"], diff["changed"]) == (0, 0, expected)
    assert diff["changed_by_column"]["subscription_revenue_usd"] == expected
    assert {c for c, n in diff["changed_by_column"].items() if n} == {"subscription_revenue_usd"}
    assert not any(diff["schema"].values()), diff["schema"]
    # decided: a dashboard that shows the changed numbers makes the change breaking
    assert diff["classification"] == "breaking"
    assert "- breaking: revenue_by_content" in report
    assert "- exposures whose data changes: content_performance, executive_kpis" in report
    assert f"{expected} ({100 * expected / rows:.1f} %) of {rows} matched rows changed" in report


@pytest.mark.dbt
def test_a_dropped_column_a_downstream_model_reads_is_breaking_and_names_it(
    after_nightly: Project, tmp_path: Path
) -> None:
    _, outcome, diffs, report = _pull_request(
        after_nightly, tmp_path,
        lambda p: _edit(p, "models/staging/catalog/stg_catalog__content.sql",
                        "        maturity_rating,\n", ""),
    )  # fmt: skip
    assert outcome.returncode == 0, outcome.output[-3000:]
    diff = diffs["stg_catalog__content"]
    assert diff["schema"]["removed"] == ["maturity_rating"] and diff["changed"] == 0
    assert diff["classification"] == "breaking"
    # dim_content names it; the snapshot of the content keeps every column
    assert diff["readers"] == {
        "content_snapshot": ["maturity_rating"], "dim_content": ["maturity_rating"],
    }  # fmt: skip
    assert (
        "read downstream by: content_snapshot (maturity_rating); dim_content (maturity_rating)"
        in report
    )
    assert diffs["dim_content"]["status"] == "not built"  # its build failed on the column


@pytest.mark.dbt
def test_an_added_column_is_non_breaking_and_nothing_downstream_changes(
    after_nightly: Project, tmp_path: Path
) -> None:
    _, outcome, diffs, report = _pull_request(
        after_nightly, tmp_path,
        lambda p: _edit(p, "models/staging/catalog/stg_catalog__content.sql",
                        "        maturity_rating,\n",
                        "        maturity_rating,\n        upper(title) as title_upper,\n"),
    )  # fmt: skip
    assert outcome.returncode == 0, outcome.output[-3000:]
    diff = diffs["stg_catalog__content"]
    assert diff["schema"]["added"] == ["title_upper"] and diff["classification"] == "non-breaking"
    assert (diff["added"], diff["removed"], diff["changed"]) == (0, 0, 0)
    downstream = [d for name, d in diffs.items() if name != "stg_catalog__content"]
    assert downstream and all(d["status"] == "compared" for d in downstream), downstream
    assert not any(d["data_changed"] or d["schema"]["added"] for d in downstream), downstream
    assert "- non-breaking: stg_catalog__content" in report
    assert "- exposures whose data changes: none" in report


@pytest.mark.dbt
def test_a_filter_removing_a_content_type_removes_its_rows_and_names_the_exposure(
    after_nightly: Project, tmp_path: Path
) -> None:
    anchor = "        on content.series_id = series_sizes.series_id\n"
    project, outcome, diffs, report = _pull_request(
        after_nightly, tmp_path,
        lambda p: _edit(p, "models/marts/core/dim_content.sql", anchor,
                        anchor + "    where content.content_type != 'live'\n"),
    )  # fmt: skip
    assert outcome.returncode == 0, outcome.output[-3000:]
    live = _count(
        _prod(project), "select count(*) from marts.dim_content where content_type = 'live'"
    )
    assert live > 0
    diff = diffs["dim_content"]
    assert (diff["added"], diff["removed"], diff["changed"]) == (0, live, 0)
    assert diff["rows_base"] - diff["rows_head"] == live
    assert diff["classification"] == "breaking" and diff["exposures"] == ["content_performance"]
    assert "- exposures whose data changes: content_performance" in report
    assert report.count("| removed |") == min(live, datadiff.EXAMPLES)

    # a diff check that errors fails the job, with the error in the summary
    con = duckdb.connect(str(_prod(project)))
    con.execute("drop table marts.dim_content; create table marts.gone as select 1 as content_id")
    con.execute("create view marts.dim_content as select * from marts.gone; drop table marts.gone")
    con.close()
    summary = project.root / "out" / "data-diff.md"
    code = main([
        "--project-dir", str(project.root), "diff", "--target", "ci", "--summary", str(summary),
    ])  # fmt: skip
    assert code == 1
    assert "**1 diff checks failed**: dim_content" in summary.read_text()
    assert "**diff failed**: " in summary.read_text() and "gone" in summary.read_text()


def test_keyed_hashes_are_not_compared_and_the_report_says_why(warehouse) -> None:
    """CI hashes personal data with a key of its own: every `email_hash` differs from
    production's by design, in the model that computes it and in one that passes it on."""
    con, wh = warehouse
    hashed = "select i as id, sha256(k || i) as email_hash, i % 3 as v from range(1, 6) r(i), "
    con.execute(f"create table prod.t as {hashed} (select 'production key' as k)")
    con.execute(f"create table ci.t as {hashed} (select 'ci key' as k)")
    con.execute(
        "create table prod.c as select * from prod.t; create table ci.c as select * from ci.t"
    )
    head, production = _manifests()
    uid, child = "model.mediapulse.t", "model.mediapulse.c"
    head["nodes"][uid]["raw_code"] = "select id, {{ keyed_hash('lower(email)') }} as email_hash, v"
    head["nodes"][child] = _node("c", "ci", raw_code="select id, email_hash, v from {{ ref('t') }}",
                                 depends_on={"nodes": [uid]})  # fmt: skip
    production["nodes"][child] = _node("c", "prod")
    diff = datadiff.diff_model(wh, head, production, uid, modified=True)
    assert diff.changed_by_column == {"v": 0} and not diff.data_changed
    assert diff.not_compared == ["email_hash"] and diff.classification == "non-breaking"
    passed_on = datadiff.diff_model(wh, head, production, child, modified=False)
    assert passed_on.not_compared == ["email_hash"] and not passed_on.data_changed
    con.execute("update ci.t set v = v + 1 where id = 2")
    text = datadiff.render_model(datadiff.diff_model(wh, head, production, uid, modified=True))
    assert "- changed columns: v 1 (20.0 %)" in text and "email_hash 5" not in text
    assert "- not compared: email_hash (keyed hashes: CI hashes personal data with a key" in text


@pytest.mark.dbt
def test_a_change_to_the_model_that_hashes_compares_everything_but_the_hash(
    after_nightly: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull request's CI never has production's hash key: it hashes with its own (a fresh
    checkout's random key). A change to stg_accounts__users that changes no value shows no
    change, and the report names the hash as not compared, with the reason."""
    key_file = after_nightly.warehouse_dir / pii.KEY_FILE
    production_key = key_file.read_text().strip() if key_file.exists() else os.environ[pii.KEY_ENV]
    monkeypatch.delenv(pii.KEY_ENV, raising=False)

    def edit(project: Project) -> None:
        (project.warehouse_dir / pii.KEY_FILE).unlink(missing_ok=True)  # CI: a key of its own
        _edit(project, "models/staging/accounts/stg_accounts__users.sql",
              "        -- ids\n", "        -- ids: the account's\n")  # fmt: skip

    project, outcome, diffs, report = _pull_request(after_nightly, tmp_path, edit)
    assert outcome.returncode == 0, outcome.output[-3000:]
    assert (project.warehouse_dir / pii.KEY_FILE).read_text().strip() != production_key
    diff = diffs["stg_accounts__users"]
    assert diff["modified"] and diff["status"] == "compared" and diff["key"] == ["user_id"]
    assert (diff["added"], diff["removed"], diff["changed"]) == (0, 0, 0), report
    assert diff["not_compared"] == ["email_hash"] and "email_hash" not in diff["changed_by_column"]
    assert not diff["data_changed"] and diff["classification"] == "non-breaking"
    assert (
        "- notice: keyed hashes not compared (CI hashes personal data with a key of its own, "
        "never production's, so their values differ by design): stg_accounts__users.email_hash"
    ) in report
