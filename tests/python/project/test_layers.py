"""The layers flow one way: staging → intermediate → marts.

A model may read models of its own layer and of the layers before it, never of a later one,
not even for ordering (`-- depends_on:`): an intermediate model that waits for a mart makes the
marts a step of the intermediate logic, and outside lineage checks (dbt-bouncer) flag it.
Read from the manifest of a plain `dbt parse`, so no warehouse is built.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.dbt

LAYERS = ("staging", "intermediate", "marts")  # the order the data flows in
# beside the flow, not in it: the SLIs over the run history (its own staging models included)
MONITORING = "monitoring"


@pytest.fixture(scope="module")
def manifest(parsed_manifest: dict) -> dict:
    return parsed_manifest


def _layer(node: dict) -> str:
    """The folder under models/ the model lives in."""
    return Path(node["original_file_path"]).parts[1]


def _own_models(manifest: dict) -> dict[str, dict]:
    return {
        uid: n for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and n["package_name"] == "mediapulse"
    }  # fmt: skip


def test_every_model_is_in_a_layer(manifest: dict) -> None:
    elsewhere = [n["original_file_path"] for n in _own_models(manifest).values()
                 if _layer(n) not in (*LAYERS, MONITORING)]  # fmt: skip
    assert not elsewhere, f"models outside {LAYERS} and {MONITORING}: {elsewhere}"


def test_monitoring_reads_only_the_run_history_and_nothing_reads_it(manifest: dict) -> None:
    models = _own_models(manifest)
    for node in models.values():
        monitoring = _layer(node) == MONITORING
        for parent in node["depends_on"]["nodes"]:
            parent_is_monitoring = (
                parent.startswith("source.mediapulse.monitoring.")
                or (parent in models and _layer(models[parent]) == MONITORING)
            )  # fmt: skip
            if parent.startswith(("source.", "model.")):
                assert parent_is_monitoring == monitoring, f"{node['name']} reads {parent}"


def test_no_model_depends_on_a_later_layer(manifest: dict) -> None:
    models = _own_models(manifest)
    backwards = []
    for node in models.values():
        layer = _layer(node)
        for parent_id in node["depends_on"]["nodes"]:
            parent = models.get(parent_id)
            if parent is None or _layer(parent) not in LAYERS or layer not in LAYERS:
                continue
            if LAYERS.index(_layer(parent)) > LAYERS.index(layer):
                backwards.append(
                    f"{node['name']} ({layer}) depends on {parent['name']} ({_layer(parent)})"
                )
    assert not backwards, "models depending on a later layer:\n" + "\n".join(sorted(backwards))
