"""The pure parts of the tooling, without a warehouse: YAML merging, planning, reports."""

from __future__ import annotations

from pathlib import Path

from mediapulse.ci import codegen, evaluate, slim_ci
from mediapulse.dbt.artifacts import NodeResult
from mediapulse.release import plan as planning

EXISTING = """\
# Staging models for the ads source.
models:
  - name: stg_a
    description: >
      Kept exactly, folded style and all.
    columns:
      - name: id
        description: Primary key.  # why: every staging model has one
        data_tests:
          - unique
      - name: amount
        description: Money.
"""


def test_merge_adds_only_what_is_missing_and_keeps_comments() -> None:
    additions = {
        "models": [
            {"name": "stg_a", "columns": [
                {"name": "kind", "data_type": "varchar", "description": "", "_after": "id"}]},
            {"name": "stg_b", "description": "", "columns": [
                {"name": "b_id", "data_type": "bigint", "description": ""}]},
        ]
    }  # fmt: skip
    merged = codegen.merge_text(EXISTING, additions)
    assert merged.startswith("# Staging models for the ads source.\n")
    assert "# why: every staging model has one" in merged
    assert "Kept exactly, folded style and all." in merged
    lines = [x.strip() for x in merged.splitlines()]
    assert lines.index("- name: kind") == lines.index("- name: id") + 4  # after id's block
    assert "- name: stg_b" in lines and "data_type: bigint" in lines
    assert codegen.merge_text(merged, additions) == merged, "idempotent"


def test_merge_into_a_new_file_and_a_new_source() -> None:
    merged = codegen.merge_text(
        "", {"sources": {"crm": [{"name": "leads", "description": "", "columns": []}]}}
    )
    assert "sources:" in merged and "- name: crm" in merged and "- name: leads" in merged


def test_model_file_follows_the_conventions(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "marts" / "ads"
    folder.mkdir(parents=True)
    model = Path("models/marts/ads/fct_x.sql")
    assert codegen.models_file(tmp_path, model) == folder / "_ads__models.yml"
    (folder / "_ads_marts__models.yml").write_text("models: []\n")
    assert codegen.models_file(tmp_path, model) == folder / "_ads_marts__models.yml"


def test_plan_models_finds_missing_models_and_columns(tmp_path: Path) -> None:
    manifest = {
        "_project": "p",
        "nodes": {
            "model.p.a": {"unique_id": "model.p.a", "resource_type": "model", "package_name": "p",
                          "name": "a", "patch_path": "p://models/_m__models.yml",
                          "original_file_path": "models/a.sql", "columns": {"id": {}}},
            "model.p.b": {"unique_id": "model.p.b", "resource_type": "model", "package_name": "p",
                          "name": "b", "patch_path": None,
                          "original_file_path": "models/b.sql", "columns": {}},
        },
    }  # fmt: skip
    generated = {
        "a": [{"name": "id", "data_type": "bigint", "description": ""},
              {"name": "new", "data_type": "date", "description": ""}],
        "b": [{"name": "x", "data_type": "varchar", "description": ""}],
    }  # fmt: skip
    plan = codegen.plan_models(tmp_path, manifest, generated)
    assert [c.what for c in plan.changes] == ["column a.new (date)", "model b"]


def _violation_fixture() -> tuple[dict, list[NodeResult], dict]:
    manifest = {
        "nodes": {
            "test.dbt_project_evaluator.is_empty_fct_undocumented_models_": {
                "package_name": "dbt_project_evaluator",
                "depends_on": {"nodes": ["model.dbt_project_evaluator.fct_undocumented_models"]},
            },
            "model.dbt_project_evaluator.fct_undocumented_models": {
                "name": "fct_undocumented_models",
                "fqn": ["dbt_project_evaluator", "marts", "documentation", "fct_undocumented"],
            },
        }
    }  # fmt: skip
    results = [
        NodeResult("test.dbt_project_evaluator.is_empty_fct_undocumented_models_", "test",
                   "is_empty_fct_undocumented_models_", "fail", "Got 2 results", 2, 0.1),
    ]  # fmt: skip
    rows = {
        "fct_undocumented_models": [
            {"resource_name": "int_x", "model_type": "intermediate"},
            {"resource_name": "fct_y", "model_type": "marts"},
        ]
    }
    return manifest, results, rows


def test_evaluator_violations_grouped_and_compared_with_a_baseline() -> None:
    violations = evaluate.collect(*_violation_fixture())
    assert [(v.category, v.rule, v.label, v.severity) for v in violations] == [
        ("documentation", "fct_undocumented_models", "fct_y", "error"),
        ("documentation", "fct_undocumented_models", "int_x", "error"),
    ]
    baseline = {
        "violations": [
            {"key": violations[0].key, "rule": "fct_undocumented_models", "label": "fct_y"},
            {"key": "gone", "rule": "fct_root_models", "label": "old"},
        ]
    }
    new, fixed = evaluate.compare(violations, baseline)
    assert [v.label for v in new] == ["int_x"]
    assert [f["label"] for f in fixed] == ["old"]
    markdown = evaluate.render_markdown(violations, new, fixed, has_baseline=True)
    assert "1 new, 1 fixed" in markdown
    assert "- **fct_undocumented_models** (error, 2):" in markdown
    assert "`int_x` **new**" in markdown and "`fct_y`\n" in markdown + "\n"


def test_evaluator_keys_ignore_moving_numbers() -> None:
    a = evaluate._key("fct_test_coverage", {"test_coverage_pct": "61.5", "note": "x"})
    b = evaluate._key("fct_test_coverage", {"test_coverage_pct": "70.0", "note": "x"})
    assert a == b


def test_breaking_change_error_becomes_one_line() -> None:
    error = (
        "Breaking change to contracted, unversioned model dim_content (models/marts/core/"
        "dim_content.sql)\nWhile comparing to previous project state, dbt detected a breaking "
        "change to an unversioned model.\n  - Columns were removed: \n    - is_original\n"
    )
    line = planning.describe_breaking_change(error)
    assert "\n" not in line
    assert "model dim_content" in line and "is_original" in line and "removed" in line


def test_plan_rendering_lists_modified_downstream_deferred() -> None:
    plan = planning.Plan(
        state=Path("state"),
        selected=("model.p.stg_a", "model.p.fct_b"),
        modified=("model.p.stg_a",),
        deferred=("seed.p.genres",),
        tests=7,
    )
    text = slim_ci.render_plan(plan)
    assert "| modified | 1 | stg_a |" in text
    assert "| downstream | 1 | fct_b |" in text
    assert "| deferred to production | 1 | genres |" in text
    assert "No production state" in slim_ci.render_plan(
        planning.Plan(state=None, selected=(), modified=(), deferred=(), tests=0)
    )


def test_changed_vars_are_added_removed_or_different_values() -> None:
    production = {"a": 1, "b": "2020-01-01", "c": [1, 2], "gone": True}
    current = {"a": 1, "b": "2020-02-01", "c": [1, 2], "new": None}
    assert planning.changed_vars(current, production) == ["b", "gone", "new"]
    assert planning.changed_vars(production, dict(production)) == []


def test_nodes_reading_a_var_directly_through_macros_and_in_test_arguments() -> None:
    manifest = {
        "nodes": {
            "model.p.direct": {"raw_code": "select {{ var('lookback') }} as x",
                               "depends_on": {"macros": []}},
            "model.p.via_macro": {"raw_code": "select {{ outer() }}",
                                  "depends_on": {"macros": ["macro.p.outer"]}},
            "test.p.range.ab12": {"raw_code": "{{ test_range(**_dbt_generic_test_kwargs) }}",
                                  "test_metadata": {"kwargs": {"max": "{{ var(\"limit\") }}"}},
                                  "depends_on": {"macros": []}},
            "model.p.other": {"raw_code": "select {{ var('lookback_days') }}",
                              "depends_on": {"macros": []}},
        },
        "macros": {
            "macro.p.outer": {"macro_sql": "{{ inner() }}",
                              "depends_on": {"macros": ["macro.p.inner"]}},
            "macro.p.inner": {"macro_sql": "{{ var( 'lookback', 2) }}",
                              "depends_on": {"macros": ["macro.p.outer"]}},  # a cycle
        },
    }  # fmt: skip
    readers = planning.nodes_reading_vars(manifest, ["lookback", "limit"])
    assert readers == {
        "model.p.direct": {"lookback"},
        "model.p.via_macro": {"lookback"},
        "test.p.range.ab12": {"limit"},
    }
    assert planning.nodes_reading_vars(manifest, []) == {}


def test_plan_lists_modified_tests_vars_and_exposures_by_name() -> None:
    plan = planning.Plan(
        state=Path("state"),
        selected=(),
        modified=(),
        deferred=("model.p.fct_b",),
        tests=2,
        modified_tests=("test.p.not_null_fct_b_id.1a2b3c4d5e", "test.p.assert_b_adds_up"),
        changed_vars=("lookback",),
        var_users=("model.p.stg_a",),
        modified_exposures=("exposure.p.kpis",),
    )
    text = slim_ci.render_plan(plan)
    assert "| modified tests | 2 | not_null_fct_b_id, assert_b_adds_up |" in text
    assert "| vars changed | 1 | lookback |" in text
    assert "| reading them | 1 | stg_a |" in text
    assert "| modified exposures (their inputs' tests run) | 1 | kpis |" in text
    assert not plan.empty and plan.needs_build


def test_refresh_selection_is_what_the_new_rows_and_the_clock_reach() -> None:
    from mediapulse.release.execute import CLOCK_MACRO, refresh_selection

    def source(name: str, table: str) -> dict:
        return {"source_name": name, "name": table, "schema": name, "identifier": table}

    def model(
        name: str, macros: list[str], package: str = "mediapulse", kind: str = "view"
    ) -> dict:
        return {"resource_type": "model", "package_name": package, "fqn": [package, name],
                "depends_on": {"macros": macros}, "config": {"materialized": kind}}  # fmt: skip

    manifest = {
        "metadata": {"project_name": "mediapulse"},
        "sources": {
            "source.mediapulse.streaming.watch_events": source("streaming", "watch_events"),
            "source.mediapulse.catalog.content": source("catalog", "content"),
        },
        "nodes": {
            # reads the clock through another macro
            "model.mediapulse.as_of": model("as_of", ["macro.mediapulse.bounded"]),
            "model.mediapulse.dim": model("dim", ["macro.dbt.ref"]),
            "model.other.pkg": model("pkg", [CLOCK_MACRO], package="other"),
            # its watermark reads the clock; what it holds does not depend on it
            "model.mediapulse.events": model("events", [CLOCK_MACRO], kind="incremental"),
        },
        "macros": {"macro.mediapulse.bounded": {"depends_on": {"macros": [CLOCK_MACRO]}}},
    }
    assert refresh_selection(manifest, ["streaming.watch_events"]) == (
        "fqn:mediapulse.as_of+", "source:streaming.watch_events+",
    )  # fmt: skip
    # a raw table no source declares selects nothing of its own; the clock's readers remain
    assert refresh_selection(manifest, ["billing.other"]) == ("fqn:mediapulse.as_of+",)
