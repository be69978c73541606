"""A deploy's docs: dbt's catalog of the relations it rebuilt, over the live release's catalog.

`dbt docs generate` compiles every node and reads every relation's columns; a deploy of one
mart changed one relation, and waiting for the rest delayed production by 4-6 s at 1 M events
(more at 10 M). So a deploy generates the docs of what it selected (`--select`, the same
selection as its build) and takes everything else from the live release's published catalog,
which described those very relations: the staged copy holds them as they are live. The docs
page (one file, manifest and catalog inlined) is then written again around the whole catalog,
the way dbt writes it (`--static`). `tests/python/release/test_deploy.py` checks that the
result equals a full build's catalog, relation by relation.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

CATALOG = "catalog.json"
MANIFEST = "manifest.json"
STATIC_DOCS = "static_index.html"
# what dbt puts in its docs page's template where the artifacts go (dbt/task/docs/generate.py)
INLINE = {MANIFEST: '"MANIFEST.JSON INLINE DATA"', CATALOG: '"CATALOG.JSON INLINE DATA"'}


def can_narrow(live_state: Path) -> bool:
    """The live release published a catalog and a docs page to start from."""
    return (live_state / CATALOG).is_file() and (live_state / STATIC_DOCS).is_file()


def merged_catalog(
    rebuilt: dict[str, Any], live: dict[str, Any], manifest: dict[str, Any]
) -> dict[str, Any]:
    """The catalog of the rebuilt relations over the live one's, for the relations the new
    manifest still has (pure)."""
    merged = dict(rebuilt)
    for part, ids in (
        ("nodes", manifest.get("nodes", {})),
        ("sources", manifest.get("sources", {})),
    ):
        kept = {uid: entry for uid, entry in live.get(part, {}).items() if uid in ids}
        merged[part] = {**kept, **rebuilt.get(part, {})}
    return merged


def _template() -> str:
    spec = importlib.util.find_spec("dbt")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dbt's docs page template (dbt-core is not installed)")
    return (Path(spec.submodule_search_locations[0]) / "task" / "docs" / "index.html").read_text()


def _with_live_compiled_code(manifest: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The manifest for the page: nodes this deploy did not compile show the live release's
    compiled SQL, where their code is the live one's (pure)."""
    nodes = dict(manifest.get("nodes", {}))
    for uid, node in nodes.items():
        before = live.get("nodes", {}).get(uid)
        if node.get("compiled_code") or not before or not before.get("compiled_code"):
            continue
        if before.get("checksum") == node.get("checksum"):
            nodes[uid] = {**node, "compiled": True, "compiled_code": before["compiled_code"]}
    return {**manifest, "nodes": nodes}


def write_narrowed(target_dir: Path, live_state: Path, state_dir: Path) -> str:
    """The catalog and docs page of a deploy that generated docs for what it rebuilt: merged
    into the live ones and written into ``state_dir``. Returns the report's line."""
    rebuilt = json.loads((target_dir / CATALOG).read_text())
    manifest = json.loads((target_dir / MANIFEST).read_text())
    catalog = merged_catalog(rebuilt, json.loads((live_state / CATALOG).read_text()), manifest)
    catalog_text = json.dumps(catalog)
    (state_dir / CATALOG).write_text(catalog_text)
    live_manifest = json.loads((live_state / MANIFEST).read_text())
    page_manifest = json.dumps(_with_live_compiled_code(manifest, live_manifest))
    page = (
        _template().replace(INLINE[MANIFEST], page_manifest).replace(INLINE[CATALOG], catalog_text)
    )
    (state_dir / STATIC_DOCS).write_text(page)
    count = len(rebuilt.get("nodes", {})) + len(rebuilt.get("sources", {}))
    return (
        f"docs: catalog of {count} rebuilt relation{'s' if count != 1 else ''}, the other "
        f"{len(catalog['nodes']) + len(catalog['sources']) - count} as the live release "
        "described them"
    )
