"""The severity policy of docs/test-severity.md, read from its machine-readable table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEADER = ["layer", "test", "severity", "thresholds", "why"]


@dataclass(frozen=True)
class Rule:
    layer: str
    test: str
    column: str | None
    severity: str
    thresholds: str
    why: str


def _table_rows(path: Path, header: list[str]) -> Iterator[list[str]]:
    """The cells of each row of the Markdown table under ``header`` in ``path``."""
    in_table = False
    for line in path.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if [c.lower() for c in cells] == header:
            in_table = True
            continue
        if not in_table:
            continue
        if not line.strip().startswith("|"):
            break
        if set("".join(cells)) <= set("-: "):
            continue
        yield cells


def load_policy(path: Path) -> dict[tuple[str, str, str | None], Rule]:
    rules: dict[tuple[str, str, str | None], Rule] = {}
    for cells in _table_rows(path, HEADER):
        layer, test, severity, thresholds, why = cells
        narrowed = re.match(r"^(\S+)\s*\(`?([a-z0-9_]+)`?\)$", test)
        name, column = (narrowed.group(1), narrowed.group(2)) if narrowed else (test, None)
        rule = Rule(layer, name.strip("`"), column, severity.lower(), thresholds, why)
        key = (rule.layer, rule.test, rule.column)
        if key in rules:
            raise ValueError(f"policy row {key} appears twice")
        rules[key] = rule
    if not rules:
        raise ValueError(f"no policy table with header {HEADER} in {path}")
    return rules


def rule_for(
    rules: dict[tuple[str, str, str | None], Rule], layer: str, test: str, column: str | None
) -> Rule | None:
    return rules.get((layer, test, column)) or rules.get((layer, test, None))


def layer_of(node: dict, manifest: dict) -> str:
    """Which layer a test node belongs to, as the policy names layers."""
    if node.get("resource_type") == "unit_test":
        return "unit"
    if not node.get("test_metadata"):
        return "singular"
    parents = node.get("depends_on", {}).get("nodes", [])
    attached = node.get("attached_node") or (parents[0] if parents else "")
    if attached.startswith("source."):
        return "source"
    parent = manifest["nodes"].get(attached, {})
    if parent.get("resource_type") in ("seed", "snapshot"):
        return str(parent["resource_type"])
    return str(parent.get("fqn", ["", "?"])[1])


def name_of_test(node: dict) -> str:
    if node.get("resource_type") == "unit_test":
        return "unit_test"
    meta = node.get("test_metadata") or {}
    if not meta:
        return "singular"
    return f"{meta['namespace']}.{meta['name']}" if meta.get("namespace") else meta["name"]


DEFAULT_THRESHOLD = "!= 0"


def effective_severity(config: dict) -> str:
    """The policy severity a test's config implements (docs/test-severity.md, "How this is
    written in the YAML"): `warn` when it can only warn, or when it warns below an `error_if`
    threshold; `error` when any failing row fails the build."""
    if str(config.get("severity", "error")).lower() == "warn":
        return "warn"
    if str(config.get("warn_if", DEFAULT_THRESHOLD)).strip() != DEFAULT_THRESHOLD:
        return "warn"
    return "error"


SOURCE_CHANGE_HEADER = ["change", "critical source", "other source", "why"]


def load_source_change_policy(path: Path) -> dict[str, tuple[str, str]]:
    """The table of docs/test-severity.md, "Schema changes of the sources": per change the
    schema check reports (`added`, `removed`, ...), its severity on a critical source and on
    any other."""
    policy: dict[str, tuple[str, str]] = {}
    for cells in _table_rows(path, SOURCE_CHANGE_HEADER):
        change, critical, other, _why = cells
        if change in policy:
            raise ValueError(f"schema change {change} appears twice")
        policy[change] = (critical.lower(), other.lower())
    if not policy:
        raise ValueError(f"no table with header {SOURCE_CHANGE_HEADER} in {path}")
    return policy
