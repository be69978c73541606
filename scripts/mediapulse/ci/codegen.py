"""`mediapulse codegen`: YAML for undocumented sources and models, from dbt-codegen, merged in.

dbt-codegen's macros (`generate_source`, `generate_model_yaml`) read the warehouse and write
the boilerplate; we decide where it goes (our conventions: `_<source>__sources.yml` beside the
staging models, `_<dir>__models.yml` beside each model) and merge it with a round-trip YAML
parser, so existing descriptions, tests, configs and comments stay as they are. Only what is
missing is added: models, source tables, and columns (with their data types).
"""

from __future__ import annotations

import difflib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.sources import is_raw_source
from mediapulse.dbt import artifacts, runner
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.base import Engine
from mediapulse.jobs import prepare

IGNORED_SCHEMAS = {"information_schema", "pg_catalog", "main", "public", "_mediapulse"}
TABLES_MARKER = "MEDIAPULSE_TABLES "


@dataclass(frozen=True)
class Change:
    path: Path
    what: str  # e.g. "model dim_x", "column dim_x.y (bigint)", "source table streaming.t"


@dataclass
class Plan:
    """New YAML per file: {path: {"models": [entries], "sources": {source: [tables]}}}."""

    files: dict[Path, dict[str, Any]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def model(self, path: Path, entry: dict[str, Any]) -> None:
        self.files.setdefault(path, {}).setdefault("models", []).append(entry)

    def source_table(self, path: Path, source: str, entry: dict[str, Any]) -> None:
        sources = self.files.setdefault(path, {}).setdefault("sources", {})
        sources.setdefault(source, []).append(entry)


# -- reading dbt-codegen's output ----------------------------------------------------------------


def _normalise_columns(columns: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for column in columns or []:
        entry: dict[str, Any] = {"name": column["name"]}
        if column.get("data_type"):
            entry["data_type"] = str(column["data_type"]).lower()
        entry["description"] = column.get("description") or ""
        out.append(entry)
    return out


# -- deciding what is missing and where it goes (pure) ------------------------------------------


def models_file(project_root: Path, model_path: Path) -> Path:
    """Where a model's YAML belongs: the one `_*__models.yml` of its directory, which holds
    every model there (`_<source>__models.yml` in staging, `_int_<domain>__models.yml` in
    intermediate, `_<domain>__models.yml` in marts); in a new directory, a new file named for
    the directory."""
    directory = (project_root / model_path).parent
    existing = sorted(directory.glob("_*__models.yml"))
    return existing[0] if existing else directory / f"_{directory.name}__models.yml"


def sources_file(project_root: Path, schema: str) -> Path:
    return project_root / "models" / "staging" / schema / f"_{schema}__sources.yml"


def plan_models(
    project_root: Path, manifest: dict[str, Any], generated: dict[str, list[dict[str, Any]]]
) -> Plan:
    """Models with no YAML entry, or with warehouse columns their YAML lacks."""
    plan = Plan()
    for node in sorted(manifest["nodes"].values(), key=lambda n: n["unique_id"]):
        if node["resource_type"] != "model" or node["package_name"] != manifest["_project"]:
            continue
        name = node["name"]
        columns = generated.get(name)
        if node.get("patch_path"):
            if columns is None:
                continue  # ephemeral or not built: nothing to compare with
            path = project_root / node["patch_path"].split("://", 1)[-1]
            documented = {c.lower() for c in node["columns"]}
            for index, column in enumerate(columns):
                if column["name"].lower() not in documented:
                    # keep the warehouse's column order: after the column that precedes it
                    after = columns[index - 1]["name"] if index else None
                    plan.model(path, {"name": name, "columns": [{**column, "_after": after}]})
                    plan.changes.append(
                        Change(path, f"column {name}.{column['name']} ({column.get('data_type')})")
                    )
        else:
            path = models_file(project_root, Path(node["original_file_path"]))
            entry: dict[str, Any] = {"name": name, "description": ""}
            if columns:
                entry["columns"] = columns
            elif columns is None:
                plan.notes.append(f"model {name} is not built in this target: no columns listed")
            plan.model(path, entry)
            plan.changes.append(Change(path, f"model {name}"))
    return plan


def plan_sources(
    project_root: Path,
    manifest: dict[str, Any],
    generated: dict[str, dict[str, list[dict[str, Any]]]],
    plan: Plan,
) -> Plan:
    """Raw tables no source declares, and declared tables' undocumented columns."""
    declared: dict[tuple[str, str], dict[str, Any]] = {}
    files: dict[str, Path] = {}
    for source in manifest["sources"].values():
        if source["package_name"] != manifest["_project"] or not is_raw_source(source):
            continue
        declared[(source["schema"].lower(), source["name"].lower())] = source
        files.setdefault(source["schema"].lower(), project_root / source["original_file_path"])
    for schema, tables in sorted(generated.items()):
        path = files.get(schema) or sources_file(project_root, schema)
        source_name = next(
            (s["source_name"] for (sc, _), s in declared.items() if sc == schema), schema
        )
        for table, columns in sorted(tables.items()):
            existing = declared.get((schema, table))
            if existing is None:
                plan.source_table(
                    path, source_name, {"name": table, "description": "", "columns": columns}
                )
                plan.changes.append(Change(path, f"source table {source_name}.{table}"))
                continue
            documented = {c.lower() for c in existing["columns"]}
            for index, column in enumerate(columns):
                if column["name"].lower() not in documented:
                    after = columns[index - 1]["name"] if index else None
                    plan.source_table(
                        path, source_name, {"name": table, "columns": [{**column, "_after": after}]}
                    )
                    plan.changes.append(
                        Change(
                            path,
                            f"column {source_name}.{table}.{column['name']} "
                            f"({column.get('data_type')})",
                        )
                    )
    return plan


# -- merging into YAML files without losing anything (pure on text) ------------------------------


def _yaml() -> YAML:
    parser = YAML()
    parser.preserve_quotes = True
    parser.width = 4096
    parser.indent(mapping=2, sequence=4, offset=2)
    return parser


def _find(items: CommentedSeq, name: str) -> CommentedMap | None:
    return next((i for i in items if isinstance(i, dict) and i.get("name") == name), None)


def _merge_columns(target: CommentedMap, columns: list[dict[str, Any]]) -> None:
    existing = target.setdefault("columns", CommentedSeq())
    for column in columns:
        if _find(existing, column["name"]) is not None:
            continue
        after = column.get("_after")
        entry = CommentedMap({k: v for k, v in column.items() if k != "_after"})
        previous = _find(existing, after) if after else None
        if previous is not None:
            existing.insert(existing.index(previous) + 1, entry)
        elif after is None and "_after" in column:
            existing.insert(0, entry)
        else:
            existing.append(entry)


def merge_text(text: str, additions: dict[str, Any]) -> str:
    """``text`` (a YAML file, possibly empty) with ``additions`` merged in; nothing removed."""
    parser = _yaml()
    document = parser.load(text) if text.strip() else None
    if document is None:
        document = CommentedMap()
    for entry in additions.get("models", []):
        models = document.setdefault("models", CommentedSeq())
        current = _find(models, entry["name"])
        if current is None:
            current = CommentedMap({k: v for k, v in entry.items() if k != "columns"})
            models.append(current)
        if entry.get("columns"):
            _merge_columns(current, entry["columns"])
    for source_name, tables in additions.get("sources", {}).items():
        sources = document.setdefault("sources", CommentedSeq())
        source = _find(sources, source_name)
        if source is None:
            source = CommentedMap({"name": source_name, "description": "", "schema": source_name})
            sources.append(source)
        source_tables = source.setdefault("tables", CommentedSeq())
        for table in tables:
            current = _find(source_tables, table["name"])
            if current is None:
                current = CommentedMap({k: v for k, v in table.items() if k != "columns"})
                source_tables.append(current)
            _merge_columns(current, table.get("columns", []))
    out = io.StringIO()
    parser.dump(document, out)
    return out.getvalue()


# -- running it ----------------------------------------------------------------------------------


def read_inputs(
    engine: Engine,
    database: str,
    env: dict[str, str] | None = None,
    schemas: list[str] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, list[dict[str, Any]]]]]:
    """(model columns by model, source columns by schema and table), as dbt-codegen sees the
    warehouse, from one `dbt run-operation`; raw tables only in ``schemas`` when given.
    Models not built in the target are absent."""
    target = engine.target
    arguments = {"database": database, "ignored_schemas": sorted(IGNORED_SCHEMAS)}
    if schemas is not None:
        arguments["schemas"] = schemas
    result = run_dbt(
        engine,
        ["run-operation", "mediapulse_codegen_inputs", "--args", json.dumps(arguments)],
        extra_env=env,
        capture_events=["PrintEvent"],
        quiet=True,
    )
    if not result.success:
        raise MediaPulseError(
            f"dbt-codegen could not read target '{target}': {result.error or 'see above'}"
        )
    models: dict[str, list[dict[str, Any]]] = {}
    sources: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for message in result.messages:
        if message.startswith(TABLES_MARKER):
            for schema in json.loads(message[len(TABLES_MARKER) :]):
                sources.setdefault(schema, {})
            continue
        if not message.lstrip().startswith("version: 2"):
            continue
        printed = yaml.safe_load(message) or {}
        for model in printed.get("models") or []:
            models[model["name"]] = _normalise_columns(model.get("columns"))
        for source in printed.get("sources") or []:
            tables = sources.setdefault(source["name"], {})
            for table in source.get("tables") or []:
                tables[table["name"]] = _normalise_columns(table.get("columns"))
    return models, sources


def raw_database(engine: Engine) -> str:
    """The database the raw schemas live in, as the sources YAML resolves it for ``target``."""
    project = engine.project
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    databases = {
        s["database"]
        for s in manifest["sources"].values()
        if s["package_name"] == project_name(manifest) and is_raw_source(s)
    }
    if len(databases) != 1:
        raise MediaPulseError(f"sources live in several databases ({databases}): not supported")
    return databases.pop()


def declared_source_schemas(manifest: dict[str, Any]) -> set[str]:
    root = project_name(manifest)
    return {
        s["schema"].lower()
        for s in manifest["sources"].values()
        if s["package_name"] == root and is_raw_source(s)
    }


def project_name(manifest: dict[str, Any]) -> str:
    return str(manifest["metadata"].get("project_name", "mediapulse"))


def render_markdown(plan: Plan, root: Path, check: bool) -> str:
    if not plan.changes:
        return "## Codegen\n\nEvery source and model built here has its YAML.\n"
    verb = "Missing" if check else "Added"
    lines = [f"## Codegen: {len(plan.changes)} item(s) without YAML", "", f"{verb}:"]
    lines += [f"- {c.what} (`{c.path.relative_to(root)}`)" for c in plan.changes]
    if check:
        lines += ["", "Run `mediapulse codegen` locally and commit the YAML it writes."]
    return "\n".join(lines) + "\n"


def run_codegen(engine: Engine, check: bool, dry_run: bool, markdown: Path | None = None) -> int:
    project, target = engine.project, engine.target
    engine = prepare.prepare(engine)
    if engine.embedded:  # column types come from the built warehouse
        prepare.require_built(engine, f"read column types from target '{target}'")
    env = prepare.target_env(engine)
    # one dbt process: dbt-codegen's macro runs on the manifest of the parse, not a second one
    with runner.session(engine, env) as dbt:
        # From scratch: codegen trusts the manifest to say which models and columns have
        # YAML, and dbt's partial parsing can keep the entry of a model whose YAML was deleted.
        parsed = run_dbt(engine, ["parse", "--no-partial-parse"], extra_env=env,
                         quiet=True)  # fmt: skip
        if not parsed.success:
            raise MediaPulseError(f"dbt parse failed: {parsed.error or 'see above'}")
        database = raw_database(engine)
        manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
        # DuckDB attaches the raw data as a catalog of its own: every schema there is raw. A
        # server database also holds production's, CI's and developers' schemas: only the raw
        # schemas the sources declare are read there (a new raw schema needs its `sources:`
        # entry first).
        raw_schemas = None if engine.embedded else sorted(declared_source_schemas(manifest))
        models, sources = read_inputs(engine, database, env, raw_schemas)
    print(dbt.describe())
    manifest["_project"] = project_name(manifest)
    plan = plan_models(project.root, manifest, models)
    plan = plan_sources(project.root, manifest, sources, plan)
    for note in plan.notes:
        print(f"note: {note}")
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(render_markdown(plan, project.root, check))
    if not plan.changes:
        print("codegen: every source and model has its YAML; nothing to do")
        return 0
    verb = "missing" if check else "add"
    for change in plan.changes:
        print(f"{verb}: {change.what} -> {change.path.relative_to(project.root)}")
    if check:
        print(f"codegen --check: {len(plan.changes)} missing; run `mediapulse codegen` and commit")
        return 1
    for path, additions in sorted(plan.files.items()):
        before = path.read_text() if path.exists() else ""
        after = merge_text(before, additions)
        if dry_run:
            relative = str(path.relative_to(project.root))
            diff = difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                f"a/{relative}",
                f"b/{relative}",
            )
            print("".join(diff), end="")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(after)
    if not dry_run:
        print(f"codegen: wrote {len(plan.files)} file(s); fill in the empty descriptions")
    return 0
