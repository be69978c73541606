"""Reading dbt's artifacts (manifest.json, run_results.json) into plain records.

dbt already knows which node ran, what it is attached to and how it ended; this module only
joins run_results with the manifest so failures can be reported by model, column and rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError

FAILED_STATUSES = {"error", "fail", "runtime error"}


def load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MediaPulseError(f"{what} not found at {path}") from None
    except (OSError, ValueError) as exc:
        raise MediaPulseError(f"{what} at {path} is unreadable or corrupt ({exc})") from exc
    if not isinstance(data, dict):
        raise MediaPulseError(f"{what} at {path} is not a JSON object: it is corrupt")
    return data


@dataclass(frozen=True)
class NodeResult:
    """One node's outcome in a dbt invocation, with what it tests when it is a test."""

    unique_id: str
    resource_type: str
    name: str
    status: str
    message: str
    failures: int | None
    execution_time: float
    model: str | None = None  # the node a test is attached to
    column: str | None = None
    rule: str | None = None  # the test's name, e.g. not_null, dbt_utils.accepted_range
    severity: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def describe(self) -> str:
        """One line naming the model, column and rule, as a user needs to act on it."""
        first_line = (self.message or "").strip().splitlines()[0] if self.message else ""
        if self.resource_type in ("test", "unit_test"):
            if not self.model:
                where = "a singular test"
            elif self.model.startswith("source "):
                where = self.model
            else:
                where = f"model {self.model}"
            if self.column:
                where += f", column {self.column}"
            rule = self.rule or self.name
            severity = f" [{self.severity}]" if self.severity else ""
            return f"{self.status.upper()}{severity} {rule} on {where}: {first_line} ({self.name})"
        return f"{self.status.upper()} {self.resource_type} {self.name}: {first_line}"


def _node_label(unique_id: str, manifest: dict[str, Any]) -> str:
    """How a user names a node: a model by its name, a source as `source <source>.<table>`."""
    source = manifest.get("sources", {}).get(unique_id)
    if source:
        return f"source {source['source_name']}.{source['name']}"
    return (manifest.get("nodes", {}).get(unique_id) or {}).get("name") or unique_id.split(".")[-1]


def _column_argument(kwargs: dict[str, Any]) -> str | None:
    """The column a table-level test is about, for tests that take it as an argument."""
    for key in ("column_name", "date_col", "timestamp_column", "field", "datepart_column"):
        if kwargs.get(key):
            return str(kwargs[key])
    return None


def _test_details(node: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    meta = node.get("test_metadata") or {}
    rule = meta.get("name")
    if rule and meta.get("namespace"):
        rule = f"{meta['namespace']}.{rule}"
    attached = node.get("attached_node")
    model = None
    if attached:
        model = _node_label(attached, manifest)
    elif node.get("resource_type") == "unit_test":
        model = node.get("model")
        rule = "unit_test"
    elif node.get("depends_on", {}).get("nodes"):
        model = ", ".join(_node_label(p, manifest) for p in node["depends_on"]["nodes"])
        rule = rule or "singular test"
    return {
        "model": model,
        "column": node.get("column_name") or _column_argument(meta.get("kwargs") or {}),
        "rule": rule,
        "severity": str((node.get("config") or {}).get("severity", "")).lower() or None,
    }


def node_results(target_dir: Path) -> list[NodeResult]:
    """The results of the last dbt invocation whose artifacts are in ``target_dir``."""
    run_results = load_json(target_dir / "run_results.json", "dbt run results")
    manifest = load_json(target_dir / "manifest.json", "dbt manifest")
    nodes = {**manifest.get("nodes", {}), **manifest.get("unit_tests", {})}
    out: list[NodeResult] = []
    for result in run_results.get("results", []):
        unique_id = result["unique_id"]
        node = nodes.get(unique_id, {})
        resource_type = node.get("resource_type") or unique_id.split(".")[0]
        if resource_type == "operation" and result.get("status") == "success":
            continue  # a hook that ran (on-run-end grants): not a node of the project
        extra = _test_details(node, manifest) if resource_type in ("test", "unit_test") else {}
        out.append(
            NodeResult(
                unique_id=unique_id,
                resource_type=resource_type,
                name=node.get("name") or unique_id.split(".")[-1],
                status=str(result.get("status")),
                message=str(result.get("message") or ""),
                failures=result.get("failures"),
                execution_time=float(result.get("execution_time") or 0.0),
                **extra,
            )
        )
    return out


def unquoted_relation(node: dict) -> str:
    """A manifest node's relation_name without quotes: database.schema.identifier."""
    return str(node["relation_name"]).replace('"', "")


def relation_name(target_dir: Path, model: str) -> str:
    """The fully qualified relation a model was built as, e.g. dev.dbt_alice_marts.dim_users."""
    manifest = load_json(target_dir / "manifest.json", "dbt manifest")
    for node in manifest.get("nodes", {}).values():
        is_model = node.get("resource_type") == "model" and node.get("name") == model
        if is_model and node.get("relation_name"):
            return unquoted_relation(node)
    raise MediaPulseError(f"model {model} is not in the manifest at {target_dir}")


def macros_called(manifest: dict[str, Any], node: dict[str, Any]) -> set[str]:
    """Every macro a manifest node calls, directly or through other macros (unique ids)."""
    macros = manifest.get("macros", {})
    found: set[str] = set()
    pending = list((node.get("depends_on") or {}).get("macros", []))
    while pending:
        uid = pending.pop()
        if uid not in found:
            found.add(uid)
            pending += ((macros.get(uid) or {}).get("depends_on") or {}).get("macros", [])
    return found
